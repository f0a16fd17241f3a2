"""Where code and models come from: git repositories, pinned PyPI and npm packages.

A pinned package (``pypi:NAME==VERSION`` sdist, ``npm:NAME@VERSION`` tarball) is fetched with
its ecosystem's own client, unpacked (regular files only) and committed into a local git
repository with a fixed author and date, so that every later stage sees a git sha and the same
package always gives the same sha.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from repotune import atomic
from repotune.errors import RepotuneError
from repotune.languages import LANGUAGES

PYPI_PREFIX = "pypi:"
NPM_PREFIX = "npm:"
_PYPI_SPEC = re.compile(r"^pypi:([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
# npm:NAME@VERSION or npm:@SCOPE/NAME@VERSION with an exact semver version (MAJOR.MINOR.PATCH,
# optional -prerelease and +build). Ranges (^1.0, 1.x, 1.0), tags (latest) and bare names
# would let the registry choose, so they are refused.
_NPM_SPEC = re.compile(
    r"^npm:((?:@[A-Za-z0-9][A-Za-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*)"
    r"@(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$"
)


def parse_pypi_spec(spec: str, key: str | None = None) -> tuple[str, str]:
    """'pypi:NAME==VERSION' -> (NAME, VERSION); anything looser (no exact pin) is an error.

    Args:
        spec: the spec as written in params.yaml.
        key: the params key it comes from (e.g. ``source.url``), named in the error.
    """
    match = _PYPI_SPEC.match(spec.strip())
    if not match:
        where = f"{key} " if key else ""
        raise RepotuneError(f"{where}{spec!r} is not a pinned PyPI spec; expected pypi:NAME==VERSION")
    return match.group(1), match.group(2)


def parse_npm_spec(spec: str, key: str = "source.url") -> tuple[str, str]:
    """'npm:NAME@VERSION' (NAME may be '@scope/name') -> (NAME, VERSION); unpinned is an error."""
    match = _NPM_SPEC.match(spec.strip())
    if not match:
        raise RepotuneError(
            f"{key} {spec!r} is not a pinned npm spec; expected npm:NAME@VERSION or "
            "npm:@SCOPE/NAME@VERSION with an exact version such as 1.2.3 (no range or tag)"
        )
    return match.group(1), match.group(2)


def _tool_reason(stderr: str, returncode: int, tool: str) -> str:
    """The most telling line of a failed pip/npm run: its last stderr line that says something."""
    noise = ("a complete log of this run", "npm warn", "npm notice")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lower().startswith(noise) and "complete log" not in ln]
    line = lines[-1] if lines else f"{tool} exited with {returncode}"
    return re.sub(r"^(ERROR:|npm error)\s*", "", line)


def pip_download(spec: str, dest: Path, kind: str) -> Path:
    """Download exactly one pinned distribution with pip, without its dependencies.

    Args:
        spec: 'pypi:NAME==VERSION'.
        dest: empty folder to download into.
        kind: 'sdist' (source distribution) or 'wheel'.

    Returns:
        The downloaded file.
    """
    name, version = parse_pypi_spec(spec)
    only = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", *only, "-d", str(dest), f"{name}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = _tool_reason(done.stderr, done.returncode, "pip")
        raise RepotuneError(f"cannot download {kind} {name}=={version} with pip: {reason}")
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if len(files) != 1:
        raise RepotuneError(f"pip download of {name}=={version} gave {len(files)} files, expected 1")
    return files[0]


def npm_pack(target: str, dest: Path) -> Path:
    """Fetch one npm package tarball with ``npm pack``, without installing or running anything.

    Args:
        target: what npm pack takes: ``NAME@VERSION`` (from the configured registry,
            integrity-checked by npm) or the path of a local ``.tgz``.
        dest: empty folder to write the tarball into.

    Returns:
        The tarball.
    """
    cmd = ["npm", "pack", target, "--json", "--ignore-scripts", "--pack-destination", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RepotuneError(f"cannot fetch npm package {target}: npm is not installed") from None
    if done.returncode != 0:
        raise RepotuneError(f"cannot fetch npm package {target} with npm pack: {_npm_reason(done)}")
    files = sorted(dest.glob("*.tgz"))
    if len(files) != 1:
        raise RepotuneError(f"npm pack of {target} gave {len(files)} tarballs, expected 1")
    return files[0]


def _npm_reason(done: subprocess.CompletedProcess) -> str:
    """npm's one-line error summary (from its --json output), else its last stderr line."""
    try:
        summary = json.loads(done.stdout)["error"]["summary"]
    except (ValueError, KeyError, TypeError):
        return _tool_reason(done.stderr, done.returncode, "npm")
    lines = [ln.strip() for ln in str(summary).splitlines() if ln.strip()]
    return lines[0] if lines else _tool_reason(done.stderr, done.returncode, "npm")


@dataclass(frozen=True)
class _Member:
    """One archive member, whatever the archive format.

    Attributes:
        name: its path in the archive, as stored.
        kind: 'file', 'dir', 'link' (symbolic or hard) or 'special' (device, fifo, ...).
        executable: the owner's execute bit (the only mode bit git records).
        open: opens its content for reading (files only).
    """

    name: str
    kind: str
    executable: bool
    open: Callable[[], IO[bytes]]


def _tar_members(tar) -> Iterator[_Member]:
    for info in tar.getmembers():
        if info.isfile():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym() or info.islnk():
            kind = "link"
        else:
            kind = "special"
        yield _Member(info.name, kind, bool(info.mode & stat.S_IXUSR),
                      lambda info=info: tar.extractfile(info))


def _zip_members(zf) -> Iterator[_Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16  # Unix mode, when the zip was made on Unix
        if info.is_dir():
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "link"
        elif mode and not stat.S_ISREG(mode):
            kind = "special"
        else:
            kind = "file"
        # Zip execute bits are ignored, as zipfile.extractall always did for pypi: zip sdists
        # (so their commit shas stay what they were).
        yield _Member(info.filename, kind, False, lambda info=info: zf.open(info))


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of a member name, or None when it is not safe to write.

    Unsafe: an absolute path, a '..' part (it could climb out of the destination), and a
    '.git' part (a packaged .git/config could make the git commands that follow run code).
    """
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or ".." in parts or any(p.lower() == ".git" for p in parts):
        return None
    return parts


def _write_members(members: list[_Member], dest: Path) -> dict[str, int]:
    """Write the regular files among `members` under `dest`; count every member not written.

    The archive's single top-level folder (``package/`` in npm tarballs, ``NAME-VERSION/`` in
    sdists), when there is one, becomes `dest` itself.
    """
    import shutil

    counts = {"archive_files": 0, "archive_skipped_unsafe_path": 0, "archive_skipped_link": 0,
              "archive_skipped_special": 0, "archive_skipped_conflict": 0}
    safe = [(m, _safe_parts(m.name)) for m in members]
    tops = {parts[0] for m, parts in safe if parts and m.kind in ("file", "dir")}
    nested = all(len(parts) > 1 for m, parts in safe if parts and m.kind == "file")
    strip = 1 if len(tops) == 1 and nested else 0
    for member, parts in safe:
        if parts is None:
            counts["archive_skipped_unsafe_path"] += 1
        elif member.kind in ("link", "special"):
            counts[f"archive_skipped_{member.kind}"] += 1
        elif member.kind == "file":
            target = dest.joinpath(*parts[strip:])
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with member.open() as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                # a file where the archive also has a folder of the same name, or the reverse
                counts["archive_skipped_conflict"] += 1
                continue
            target.chmod(0o755 if member.executable else 0o644)
            counts["archive_files"] += 1
    return counts


def unpack_archive(archive: Path, dest: Path) -> dict[str, int]:
    """Unpack the regular files of a .tar(.gz, .bz2, .xz), .tgz or .zip archive into `dest`.

    Nothing is ever written outside `dest`: members with an absolute path or a '..' part are
    refused; symbolic links, hard links and special files (devices, fifos) are skipped. Each is
    counted, not fatal. Folders are created as needed (empty ones do not matter to git).

    Returns:
        Counts: archive_files, archive_skipped_unsafe_path, archive_skipped_link,
        archive_skipped_special, archive_skipped_conflict.
    """
    import tarfile
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as tar:
            return _write_members(list(_tar_members(tar)), dest)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return _write_members(list(_zip_members(zf)), dest)
    raise RepotuneError(f"unknown archive format: {archive.name}")


# A fixed identity and date for the commit made from a package, so that the same package
# always gives the same commit sha.
_PACKAGE_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "repotune",
    "GIT_AUTHOR_EMAIL": "repotune@localhost",
    "GIT_COMMITTER_NAME": "repotune",
    "GIT_COMMITTER_EMAIL": "repotune@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}
# Never run hooks (neither the user's templates nor anything a repository ships), never ask
# for credentials on a terminal, never read the user's or the system's git config.
_GIT_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "protocol.file.allow=always"]
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
# Opt-in, never by default: the git credential helper to clone a private HTTPS repository with
# (e.g. `store`, `cache`, `osxkeychain`, `!gh auth git-credential`). An environment variable,
# not a param: credentials belong to the machine and change no output. The user's own git
# config stays ignored otherwise (no hooks, aliases or url rewrites from it).
CREDENTIAL_HELPER_ENV = "REPOTUNE_GIT_CREDENTIAL_HELPER"


def _credential_options() -> list[str]:
    """``--config=credential.helper=...`` for git clone when the user opted in, else nothing."""
    import os
    import shlex

    helper = os.environ.get(CREDENTIAL_HELPER_ENV, "").strip()
    # GitPython splits multi_options with shlex: quote the helper, which may hold spaces.
    return [shlex.quote(f"--config=credential.helper={helper}")] if helper else []


def _first_line(exc: Exception) -> str:
    """The most telling line of a git error (its stderr's last 'fatal:' line when there is one)."""
    text = getattr(exc, "stderr", "") or str(exc)
    lines = [ln.strip().strip("'").strip() for ln in str(text).splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "fatal:" in ln or "error:" in ln]
    line = (fatal or lines or [type(exc).__name__])[-1]
    return line.split("fatal:", 1)[-1].split("error:", 1)[-1].strip()


def commit_folder(folder: Path, message: str) -> None:
    """Make `folder` a git repository holding everything in it as one commit on ``main``.

    The commit has a fixed author and date, so the same files always give the same sha.
    """
    import git

    repo = git.Repo.init(folder, initial_branch="main")
    with repo.git.custom_environment(**_PACKAGE_COMMIT_ENV, **_GIT_ENV):
        repo.git.execute(["git", *_GIT_SAFE, "add", "--all", "--force", "."])
        repo.git.execute(["git", *_GIT_SAFE, "commit", "--quiet", "--no-verify", "--no-gpg-sign",
                          "--allow-empty", "-m", message])


def is_package(url: str) -> bool:
    """Whether `url` names a pinned package (pypi: or npm:) rather than a git repository."""
    return url.startswith((PYPI_PREFIX, NPM_PREFIX))


def unpack_package(url: str, dest: Path) -> dict[str, int]:
    """Fetch a pinned package, unpack it into `dest` and commit it as one git commit.

    Args:
        url: ``pypi:NAME==VERSION`` (the source distribution, with pip) or ``npm:NAME@VERSION``
            (the package tarball, with ``npm pack``).
        dest: the folder to create; the archive's top-level folder becomes its root.

    Returns:
        The counts of :func:`unpack_archive` (files written, members skipped by reason).
    """
    with atomic.scratch_dir(dest) as tmp:
        download = tmp / "download"
        download.mkdir()
        if url.startswith(PYPI_PREFIX):
            parse_pypi_spec(url, key="source.url")
            archive = pip_download(url, download, "sdist")
            message = f"{url} (unpacked source distribution)"
        else:
            name, version = parse_npm_spec(url)
            archive = npm_pack(f"{name}@{version}", download)
            message = f"{url} (unpacked npm package)"
        counts = unpack_archive(archive, dest)
    commit_folder(dest, message)
    return counts


def clone(url: str, rev: str, dest: Path, submodules: bool = False) -> tuple[str, dict[str, int]]:
    """Clone `url` (git URL, local path, pypi:NAME==VERSION or npm:NAME@VERSION) at `rev`.

    Args:
        url: where the code is.
        rev: a branch, tag or commit sha ('HEAD' for the default branch).
        dest: folder to create; it holds the working tree and its .git afterwards.
        submodules: also check out submodules (off by default: they are other projects).

    Returns:
        The resolved 40-character commit sha, and for a package the counts of
        :func:`unpack_archive` (empty for a git repository).
    """
    import git

    counts: dict[str, int] = {}
    if is_package(url):
        counts = unpack_package(url, dest)
        repo = git.Repo(dest)
    else:
        if not url.startswith(("http://", "https://", "ssh://", "git://", "file://", "git@")):
            path = Path(url).expanduser()
            if not path.exists():
                raise RepotuneError(f"cannot clone source.url {url!r}: no such path")
            url = str(path.resolve())
        try:
            repo = git.Repo.clone_from(
                url, dest,
                multi_options=[*(f"--config={c}" for c in _GIT_SAFE[1::2]), *_credential_options(), "--no-checkout"],
                env=_GIT_ENV,
                # only our own --config values above, and the helper the user named in their environment
                allow_unsafe_options=True,
            )
        except git.GitCommandError as exc:
            raise RepotuneError(f"cannot clone source.url {url!r}: {_first_line(exc)}") from None
    sha = resolve_rev(repo, rev)
    with repo.git.custom_environment(**_GIT_ENV):
        repo.git.execute(["git", *_GIT_SAFE, "checkout", "--quiet", "--detach", sha])
        if submodules:
            try:
                repo.git.execute(["git", *_GIT_SAFE, "submodule", "update", "--init", "--recursive"])
            except git.GitCommandError as exc:
                raise RepotuneError(f"cannot fetch submodules: {_first_line(exc)}") from None
    return sha, counts


def resolve_rev(repo, rev: str) -> str:
    """Resolve a branch (local or origin/), tag or sha to a 40-char commit sha, or fail clearly."""
    import git

    for candidate in (rev, f"origin/{rev}"):
        try:
            return repo.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}")
        except git.GitCommandError:
            continue
    raise RepotuneError(f"source.rev {rev!r} is not a branch, tag or commit of the source repository")


def export_tree(checkout: Path, dest: Path) -> dict[str, int]:
    """Copy the working tree of `checkout` to `dest`: regular files only, no .git.

    Symbolic links are not copied (one pointing outside the repository would make later
    stages read, and DVC cache, files that are not the repository's); they are counted.

    Returns:
        Counts: files, bytes, symlinks_skipped, and files per language (``files_<language>``,
        by extension; ``files_other`` for the rest).
    """
    import shutil

    by_suffix = {suffix: lang for lang, module in LANGUAGES.items() for suffix in module.EXTENSIONS}
    counts: dict[str, int] = {"files": 0, "bytes": 0, "symlinks_skipped": 0, "files_other": 0}
    counts.update({f"files_{lang}": 0 for lang in LANGUAGES})
    for path in sorted(checkout.rglob("*")):
        rel = path.relative_to(checkout)
        if ".git" in rel.parts:
            continue
        if path.is_symlink():
            counts["symlinks_skipped"] += 1
            continue
        if not path.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        counts["files"] += 1
        counts["bytes"] += path.stat().st_size
        counts[f"files_{by_suffix.get(path.suffix, 'other')}"] += 1
    return counts
