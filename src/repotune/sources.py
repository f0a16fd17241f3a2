"""Where code and models come from: git repositories and pinned PyPI distributions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from repotune.errors import RepotuneError

PYPI_PREFIX = "pypi:"
_PYPI_SPEC = re.compile(r"^pypi:([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def parse_pypi_spec(spec: str) -> tuple[str, str]:
    """'pypi:NAME==VERSION' -> (NAME, VERSION); anything looser (no exact pin) is an error."""
    match = _PYPI_SPEC.match(spec.strip())
    if not match:
        raise RepotuneError(f"{spec!r} is not a pinned PyPI spec; expected pypi:NAME==VERSION")
    return match.group(1), match.group(2)


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
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise RepotuneError(f"cannot download {kind} {name}=={version} with pip: {reason}")
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if len(files) != 1:
        raise RepotuneError(f"pip download of {name}=={version} gave {len(files)} files, expected 1")
    return files[0]


# A fixed identity and date for the commit made from a PyPI source distribution, so that the
# same sdist always gives the same commit sha.
_SDIST_COMMIT_ENV = {
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


def _first_line(exc: Exception) -> str:
    """The most telling line of a git error (its stderr's last 'fatal:' line when there is one)."""
    text = getattr(exc, "stderr", "") or str(exc)
    lines = [ln.strip().strip("'").strip() for ln in str(text).splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "fatal:" in ln or "error:" in ln]
    line = (fatal or lines or [type(exc).__name__])[-1]
    return line.split("fatal:", 1)[-1].split("error:", 1)[-1].strip()


def unpack_sdist(spec: str, dest: Path) -> None:
    """Fetch a pinned sdist with pip, unpack it into `dest` and commit it as one git commit.

    The archive's single top-level folder (NAME-VERSION/) becomes the repository root. The
    commit has a fixed author and date, so the same sdist always yields the same sha.
    """
    import shutil
    import tarfile
    import tempfile
    import zipfile

    import git

    with tempfile.TemporaryDirectory() as tmp:
        download = Path(tmp) / "download"
        download.mkdir()
        archive = pip_download(spec, download, "sdist")
        unpacked = Path(tmp) / "unpacked"
        if archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")  # refuses absolute paths and links out
        elif archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
        else:
            raise RepotuneError(f"unknown source distribution format: {archive.name}")
        tops = list(unpacked.iterdir())
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else unpacked
        shutil.copytree(root, dest, symlinks=True)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.git.custom_environment(**_SDIST_COMMIT_ENV, **_GIT_ENV):
        repo.git.execute(["git", *_GIT_SAFE, "add", "--all", "--force", "."])
        repo.git.execute(["git", *_GIT_SAFE, "commit", "--quiet", "--no-verify", "--no-gpg-sign",
                          "-m", f"{spec} (unpacked source distribution)"])


def clone(url: str, rev: str, dest: Path, submodules: bool = False) -> str:
    """Clone `url` (git URL, local path, or pypi:NAME==VERSION) at `rev` into `dest`.

    Args:
        url: where the code is.
        rev: a branch, tag or commit sha ('HEAD' for the default branch).
        dest: folder to create; it holds the working tree and its .git afterwards.
        submodules: also check out submodules (off by default: they are other projects).

    Returns:
        The resolved 40-character commit sha.
    """
    import git

    if url.startswith(PYPI_PREFIX):
        unpack_sdist(url, dest)
        repo = git.Repo(dest)
    else:
        if not url.startswith(("http://", "https://", "ssh://", "git://", "file://", "git@")):
            path = Path(url).expanduser()
            if not path.exists():
                raise RepotuneError(f"cannot clone source.url {url!r}: no such path")
            url = str(path.resolve())
        try:
            repo = git.Repo.clone_from(
                url, dest, multi_options=[*(f"--config={c}" for c in _GIT_SAFE[1::2]), "--no-checkout"],
                env=_GIT_ENV,
                allow_unsafe_options=True,  # only our own --config values above, never user input
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
    return sha


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

    from repotune.languages import EXTENSIONS

    by_suffix = {suffix: lang for lang, suffixes in EXTENSIONS.items() for suffix in suffixes}
    counts: dict[str, int] = {"files": 0, "bytes": 0, "symlinks_skipped": 0, "files_other": 0}
    counts.update({f"files_{lang}": 0 for lang in EXTENSIONS})
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
