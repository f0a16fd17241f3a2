"""The README leads and the docs/ pages hold together: a short README that links every page,
links and images that resolve, the commands CI runs, and no issue-tracker talk."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# [text](target) and ![alt](target), with an optional "title"; the target has no spaces.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", prose(page.read_text(encoding="utf-8")), flags=re.M)}


def test_slug_matches_githubs_anchors():
    # Worked out by hand from GitHub's rendering of the same headings.
    assert slug("Retrieval: what the context adds (SmolLM2-135M-Instruct, 2-core CPU)") == \
        "retrieval-what-the-context-adds-smollm2-135m-instruct-2-core-cpu"
    assert slug("Several processes, several GPUs (train.launcher)") == "several-processes-several-gpus-trainlauncher"
    assert slug("Why the length floor is 8 code tokens") == "why-the-length-floor-is-8-code-tokens"


def test_link_pattern_finds_links_and_images_but_not_code():
    text = "See [a](docs/a.md) and ![plot](x.png \"t\"). `[b](no.md)`\n```\n[c](no.md)\n```\n"
    assert LINK.findall(prose(text)) == ["docs/a.md", "x.png"]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 260, f"README.md has {lines} lines; move reference material to docs/"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    assert DOCS, "no docs/*.md pages"
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page.resolve()
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers(page: Path):
    hits = re.findall(r".{0,40}\bissue \d+.{0,20}", page.read_text(encoding="utf-8"), flags=re.I)
    assert not hits, f"{page.name} speaks of issue numbers: {hits}"


def test_readme_shows_the_commands_ci_runs():
    """.ci/run installs and tests "exactly as README.md says": the same lines, in bash blocks."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    install = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert install in commands
    assert "pytest" in commands and "pytest" in ci.splitlines()
    assert "dvc repro" in commands
