"""Docstring extraction on fixture files covering every shape of definition and broken file."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURE_FILES, GEOMETRY_PY, write_tree

from repotune.distill import undocumented_records
from repotune.files import source_files
from repotune.languages import definitions, parser
from repotune.params import ExtractParams
from repotune.extraction import extract_samples
from repotune.tasks import docstring


def samples_of(code: str, target: str = "summary", doc_tags: str = "keep") -> dict[str, dict]:
    src = code.encode()
    tree = parser("python").parse(src)
    found = list(definitions("python", tree.root_node, src))
    extract = docstring.Extract(target=target, doc_tags=doc_tags)
    return {s["name"]: s for s in docstring.samples(found, code, extract, Counter(), language="python", path="m.py")}


@pytest.fixture(scope="module")
def geometry() -> dict[str, dict]:
    return samples_of(GEOMETRY_PY)


def test_every_definition_with_a_docstring_is_found(geometry):
    assert sorted(geometry) == sorted([
        "area", "perimeter", "fetch_shape", "only_doc", "one_liner", "Shape", "Shape.__init__",
        "Shape.__repr__", "Shape.count", "Shape.scaled", "Shape.scaled.<locals>.scale",
        "Shape.render", "Shape.test_like_method",
    ])


def test_kinds(geometry):
    assert geometry["area"]["kind"] == "function"
    assert geometry["fetch_shape"]["kind"] == "async_function"
    assert geometry["Shape"]["kind"] == "class"
    assert geometry["Shape.count"]["kind"] == "method"  # decorated method
    assert geometry["Shape.render"]["kind"] == "async_method"
    assert geometry["Shape.scaled.<locals>.scale"]["kind"] == "function"  # nested in a method


def test_no_docstring_and_byte_strings_are_not_samples(geometry):
    assert "no_docstring" not in geometry
    assert "byte_doc" not in geometry  # Python's __doc__ is None for b"..."


def test_input_is_source_without_docstring_rest_byte_identical(geometry):
    sample = geometry["perimeter"]
    assert sample["input"] == (
        "@functools.lru_cache(maxsize=None)\n@staticmethod\ndef perimeter(width, height):\n"
        "    # a comment that stays\n    return 2 * (width + height)"
    )
    lines = GEOMETRY_PY.splitlines()
    assert lines[sample["start_line"] - 1] == "@functools.lru_cache(maxsize=None)"
    assert lines[sample["end_line"] - 1] == "    return 2 * (width + height)"


def test_indentation_of_methods_is_kept(geometry):
    assert geometry["Shape.__init__"]["input"] == (
        "    def __init__(self, vertices):\n        self.vertices = vertices"
    )
    nested = geometry["Shape.scaled.<locals>.scale"]["input"]
    assert nested.startswith("        def scale(point):\n            return")


def test_docstring_only_body_becomes_ellipsis_and_stays_valid_python(geometry):
    assert geometry["only_doc"]["input"] == "def only_doc():\n    ..."
    assert geometry["one_liner"]["input"] == "def one_liner(): ..."
    for name in ("only_doc", "one_liner", "area", "Shape"):
        ast.parse(geometry[name]["input"])


def test_targets_are_cleaned_values(geometry):
    assert geometry["area"]["target"].startswith("Return the area of a rectangle")
    assert geometry["perimeter"]["target"] == "Return the perimeter of a rectangle."
    # raw string: the backslash is kept as written
    assert r"\d+" in geometry["fetch_shape"]["target"]


def test_full_target_keeps_every_paragraph_with_common_indentation_removed():
    full = samples_of(GEOMETRY_PY, target="full")["perimeter"]["target"]
    assert full == (
        "Return the perimeter of a rectangle.\n\n"
        "Both sides must be non-negative numbers; the result has the unit of the inputs."
    )


def test_escapes_and_concatenation_follow_python():
    code = 'def f():\n    "caf\\u00e9 " "and more"\n    return 1\n'
    sample = samples_of(code)["f"]
    assert sample["target"] == "caf\u00e9 and more"
    assert sample["input"] == "def f():\n    return 1"


def test_fstring_is_not_a_docstring_and_semicolon_is_taken_with_docstring():
    assert "f" not in samples_of('def f():\n    f"""not {1} a docstring"""\n')
    assert samples_of('def g():\n    """Doc."""; x = 1\n')["g"]["input"] == "def g():\n    x = 1"


def test_broken_files_are_counted_by_reason_never_fatal(tmp_path: Path):
    for rel, data in FIXTURE_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    outside = tmp_path.parent / "elsewhere.py"
    outside.write_text('def secret():\n    """Never read: this file is outside the repository tree."""\n')
    (tmp_path / "pkg/link.py").symlink_to(outside)
    records, counts = extract_samples(
        tmp_path, repo="r", sha="0" * 40, task_name="docstring",
        extract=ExtractParams(max_file_bytes=100_000),
    )
    assert counts["files_skipped_syntax_error"] == 1
    assert counts["files_skipped_not_utf8"] == 1
    assert counts["files_skipped_binary"] == 1
    assert counts["files_skipped_too_large"] == 1
    assert counts["files_skipped_symlink"] == 1
    assert counts["files_skipped_test"] == 1  # tests/test_geometry.py: Python's test layout
    assert "files_skipped_excluded" not in counts
    assert counts["files_parsed"] == 3
    assert counts["files_seen"] == 9
    names = {r["name"] for r in records}
    assert "secret" not in names and "test_area" not in names and "broken" not in names
    assert counts["samples"] == len(records) == 14
    assert records == sorted(records, key=lambda r: (r["path"], r["start_line"], r["name"]))
    first = records[0]
    assert set(first) == {"id", "repo", "sha", "path", "language", "task", "kind", "name",
                          "start_line", "end_line", "input", "target", "is_test"}


def test_include_and_exclude_globs(tmp_path: Path):
    for rel in ("a/x.py", "a/vendor/y.py", "b/z.py", "a/x_test.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    counts: Counter = Counter()
    found = [f.path for f in source_files(tmp_path, "python", ["a/"], ["vendor/", "*_test.py"], 10**6, counts)]
    assert found == ["a/x.py"]
    assert counts["files_skipped_excluded"] == 3


def test_ids_are_stable_and_distinct(geometry):
    from repotune.extraction import sample_id

    assert sample_id("p.py", "f", 3) == sample_id("p.py", "f", 3)
    assert len({sample_id("p.py", "f", line) for line in range(100)}) == 100


def test_doc_tags_are_kept_or_stripped():
    code = 'def f(x):\n    """\n    Scale C{x}.\n\n    More.\n\n    @param x: the value.\n    @return: twice x.\n    """\n    return 2 * x\n'
    assert samples_of(code, target="full")["f"]["target"] == (
        "Scale C{x}.\n\nMore.\n\n@param x: the value.\n@return: twice x."
    )
    assert samples_of(code, target="full", doc_tags="strip")["f"]["target"] == "Scale C{x}.\n\nMore."
    tags_only = 'def g(x):\n    """@param x: the value."""\n    return x\n'
    assert "g" not in samples_of(tags_only, doc_tags="strip")  # nothing left: not a sample


def test_generated_files_are_skipped_and_counted(tmp_path: Path):
    (tmp_path / "gen_pb2.py").write_text("# Generated by the protocol buffer compiler.  DO NOT EDIT!\nx = 1\n")
    (tmp_path / "made.py").write_text("x = 1\n")
    (tmp_path / "real.py").write_text('"""A module."""\n' + "x = 1\n" * 200 + "# generated by hand\n")
    counts: Counter = Counter()
    found = [f.path for f in source_files(tmp_path, "python", ["*"], [], 10**6, counts, generated=["made.py"])]
    assert found == ["real.py"]  # a late mention of "generated by" does not count
    assert counts["files_skipped_generated"] == 2


# --- test files by each language's layouts (extract.exclude_tests) ---------------------------


def _kotlin(stem: str) -> str:
    return (f"package a\n\n/** Return the number that {stem} stands for. */\n"
            "fun documented(): Int = 1\n\nfun plain(): Int = 2\n")


def _java(stem: str) -> str:
    return (f"package x;\n\nclass {stem} {{\n    /** Return the number one, always. */\n"
            "    int documented() { return 1; }\n\n    int plain() { return 2; }\n}\n")


PYTHON = 'def documented():\n    """Return the number one, always."""\n    return 1\n\n\ndef plain():\n    return 2\n'

# A Gradle multiplatform project (module lib/) beside an Android app (module app/), with a
# Python script and test. Each path's fate, worked out by hand from the patterns:
GRADLE_KEPT = {
    "lib/src/commonMain/kotlin/a/Foo.kt",
    "lib/src/commonMain/kotlin/a/TestabilityHelper.kt",  # "Test" inside a main-code name
    "lib/src/commonMain/kotlin/a/Contest.kt",            # "test" at the end, lowercase
    "lib/src/main/kotlin/a/testing/Probe.kt",            # testing/ is Python's layout, not Kotlin's
    "app/src/main/kotlin/x/Helper.kt",
    "app/src/main/java/x/Service.java",
    "scripts/gen.py",
}
GRADLE_TESTS = {
    "lib/src/commonTest/kotlin/a/FooTest.kt",     # source set (at a module's depth) and name
    "lib/src/jvmTest/kotlin/a/JvmFixtures.kt",    # source set only
    "lib/src/jvmMain/kotlin/a/FooTests.kt",       # name only
    "app/src/test/kotlin/x/HelperSpec.kt",        # Gradle/Maven src/test/
    "app/src/androidTest/java/x/ScreenTest.java",
    "app/src/main/java/x/ServiceIT.java",         # Failsafe's integration-test name
    "tests/test_x.py",
}
GRADLE_EXCLUDED = {"docs/src/main/kotlin/Sample.kt", "setup.py"}  # extract.exclude (docs/, setup.py)


def gradle_layout(root: Path) -> None:
    files = {}
    for rel in GRADLE_KEPT | GRADLE_TESTS | GRADLE_EXCLUDED:
        stem = Path(rel).stem
        files[rel] = {".kt": _kotlin, ".java": _java}.get(Path(rel).suffix, lambda _: PYTHON)(stem)
    write_tree(root, files)


def test_test_files_are_skipped_by_each_languages_layouts_and_counted(tmp_path: Path):
    gradle_layout(tmp_path)
    extract = ExtractParams(languages=["kotlin", "java", "python"])
    records, counts = extract_samples(tmp_path, repo="r", sha="0" * 40, task_name="docstring", extract=extract)
    assert {r["path"] for r in records} == GRADLE_KEPT
    assert len(records) == 7  # one documented definition per kept file
    # 16 files: Kotlin 10 (5 kept, 4 test, 1 excluded), Java 3 (1 kept, 2 test), Python 3 (1 each).
    assert counts["files_seen"] == 16
    assert counts["files_skipped_test"] == 7
    assert counts["files_skipped_excluded"] == 2
    assert counts["files_parsed"] == 7
    assert (counts["files_parsed_kotlin"], counts["files_parsed_java"], counts["files_parsed_python"]) == (5, 1, 1)


def test_test_files_are_kept_when_exclude_tests_is_false(tmp_path: Path):
    gradle_layout(tmp_path)
    extract = ExtractParams(languages=["kotlin", "java", "python"], exclude_tests=False)
    records, counts = extract_samples(tmp_path, repo="r", sha="0" * 40, task_name="docstring", extract=extract)
    assert {r["path"] for r in records} == GRADLE_KEPT | GRADLE_TESTS
    assert "files_skipped_test" not in counts
    assert counts["files_skipped_excluded"] == 2  # exclude still applies
    assert (counts["files_parsed_kotlin"], counts["files_parsed_java"], counts["files_parsed_python"]) == (9, 3, 2)


def test_test_file_wins_over_include_and_exclude(tmp_path: Path):
    write_tree(tmp_path, {"docs/tests/test_a.py": "x = 1\n", "docs/b.py": "x = 1\n", "c/d_test.py": "x = 1\n"})
    counts: Counter = Counter()
    tests = ("tests/", "*_test.py")
    found = list(source_files(tmp_path, "python", ["docs/"], ["docs/"], 10**6, counts, tests=tests))
    assert found == []
    assert (counts["files_skipped_test"], counts["files_skipped_excluded"]) == (2, 1)


def test_distill_undocumented_definitions_skip_test_files_too(tmp_path: Path):
    gradle_layout(tmp_path)
    counts: Counter = Counter()
    records = undocumented_records(
        tmp_path, repo="r", sha="0" * 40, task_name="docstring",
        extract=ExtractParams(languages=["kotlin", "java", "python"]),
        skip_paths=set(), max_input_tokens=400, counts=counts,
    )
    # `plain` in every kept file, plus class Service (no doc comment) in Service.java.
    assert sorted((r["path"], r["name"]) for r in records) == sorted(
        [(rel, "plain") for rel in GRADLE_KEPT if not rel.endswith(".java")]
        + [("app/src/main/java/x/Service.java", "Service"), ("app/src/main/java/x/Service.java", "Service.plain")]
    )
