"""Walking a checked-out repository for the source files of one language.

Every file that is looked at and not used is counted under a named reason; a bad file is
never fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

from repotune.languages import EXTENSIONS

# Bytes inspected for a NUL when telling binary files from text (as git and grep do).
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    """One decoded source file; `path` is relative to the repository root, POSIX style."""

    path: str
    data: bytes


def source_files(
    root: Path,
    lang: str,
    include: list[str],
    exclude: list[str],
    max_file_bytes: int,
    counts: Counter,
) -> Iterator[SourceFile]:
    """Yield the readable UTF-8 source files of `lang` under `root`, sorted by path.

    Args:
        root: repository working tree.
        lang: language name (its extensions choose the files).
        include: gitignore-style patterns a file must match (``*`` = everything).
        exclude: gitignore-style patterns that remove a file (``tests/`` = any folder named tests).
        max_file_bytes: larger files are skipped (generated or minified code, data blobs).
        counts: updated in place: ``files_seen`` and ``files_skipped_<reason>`` with reason
            one of excluded, symlink, too_large, binary, not_utf8.
    """
    included = pathspec.PathSpec.from_lines("gitignore", include)
    excluded = pathspec.PathSpec.from_lines("gitignore", exclude)
    suffixes = EXTENSIONS[lang]
    for path in sorted(root.rglob("*")):
        if path.suffix not in suffixes or path.is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        if ".git" in Path(rel).parts:
            continue
        counts["files_seen"] += 1
        if not included.match_file(rel) or excluded.match_file(rel):
            counts["files_skipped_excluded"] += 1
            continue
        if path.is_symlink():
            counts["files_skipped_symlink"] += 1
            continue
        if path.stat().st_size > max_file_bytes:
            counts["files_skipped_too_large"] += 1
            continue
        data = path.read_bytes()
        if b"\0" in data[:_BINARY_SNIFF_BYTES]:
            counts["files_skipped_binary"] += 1
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            counts["files_skipped_not_utf8"] += 1
            continue
        yield SourceFile(rel, data)
