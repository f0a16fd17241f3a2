"""Stage `retrieve` and repotune.retrieval: chunks, Jaccard scores, no leaks, determinism.

The stage tests clone a repository made here with gitpython (the clone stage, in-process) and
hand-write the split records pointing into it, so that which file holds which split's sample,
and which chunk would give a target away, is fixed by the test. Scores are Jaccard
similarities of identifier sets worked out by hand in the comments.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import git
import numpy as np
import pytest

from conftest import load_stage, write_params

from repotune import io, params, retrieval
from repotune.dedup import containment
from repotune.errors import ParamsError
from repotune.params import NearDuplicateParams, RetrievalParams

NEAR = NearDuplicateParams()  # 5-grams, threshold 0.7, targets of 20 tokens or more

CHECKSUM_PY = '''\
def compute_checksum(data, seed):
    total = seed
    for byte in data:
        total = (total * 31 + byte) % 65521
    return total
'''
USES_PY = '''\
from pkg.checksum import compute_checksum


def verify_block(data, seed, expected):
    total = compute_checksum(data, seed)
    return total == expected
'''
OTHER_PY = '''\
def render_page(title, body):
    return title + body
'''
FILES = {"pkg/checksum.py": CHECKSUM_PY, "pkg/uses.py": USES_PY, "pkg/other.py": OTHER_PY}


def git_repo(path: Path, files: dict[str, str]) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text, encoding="utf-8")
    repo.git.add("--all")
    repo.index.commit("code")
    return repo


def sample(path: str, name: str, input_: str, target: str, task: str, **extra) -> dict:
    return {"id": f"{path}:{name}", "path": path, "name": name, "input": input_, "target": target,
            "task": task, "language": "python", "start_line": 1, **extra}


def run_retrieve(
    work: Path, files: dict[str, str] | Path, splits: dict[str, list[dict]], task: str, **retrieval_settings
) -> tuple[dict[str, list[dict]], dict]:
    """Clone `files` (or the repository at that path) into work/data/repo, write the split
    records, run the retrieve stage."""
    source = files if isinstance(files, Path) else Path(git_repo(work / "source", files).working_dir)
    write_params(work, source={"url": str(source), "rev": "main"}, task={"name": task},
                 retrieval={"enabled": True, **retrieval_settings})
    load_stage("clone").main([])
    for name in ("train", "val", "test"):
        io.write_jsonl(work / "data/split" / f"{name}.jsonl", splits.get(name, []))
    io.write_jsonl(work / "data/ood.jsonl", splits.get("ood", []))
    load_stage("retrieve").main([])
    out = {name: io.read_jsonl(work / "data/retrieved" / f"{name}.jsonl") for name in retrieval.SPLITS}
    return out, io.read_json(work / "metrics/retrieve.json")


def spans(record: dict) -> list[tuple[str, int, int, float]]:
    return [(c["path"], c["start_line"], c["end_line"], c["score"]) for c in record["chunks"]]


# --- units ------------------------------------------------------------------------------------


def test_line_windows_cover_every_line_and_end_at_the_last():
    assert retrieval.line_windows(25, 20, 10) == [(1, 20), (11, 25)]
    assert retrieval.line_windows(20, 20, 10) == [(1, 20)]
    assert retrieval.line_windows(3, 20, 10) == [(1, 3)]
    assert retrieval.line_windows(30, 10, 10) == [(1, 10), (11, 20), (21, 30)]
    assert retrieval.line_windows(0, 20, 10) == []


def test_innermost_keeps_the_definitions_that_hold_no_other():
    # A class (1-10) holding two methods, then a function.
    assert retrieval.innermost([(1, 10), (2, 4), (6, 9), (12, 15)]) == [(2, 4), (6, 9), (12, 15)]


def test_jaccard_scores_through_the_inverted_index(tmp_path: Path):
    (tmp_path / "a.py").write_text("x = y\n\nz = x\n")  # one window: {x, y, z}
    (tmp_path / "b.py").write_text("w = q\n")  # {w, q}
    counts: Counter = Counter()
    index = retrieval.build_index(tmp_path, languages=["python"], retrieval=RetrievalParams(),
                                  max_file_bytes=10_000, generated=[], counts=counts)
    assert (index.paths, counts["chunks_indexed"], counts["files_indexed"]) == (["a.py", "b.py"], 2, 2)
    # {x, y, v} vs {x, y, z}: 2 shared of 4 -> 0.5; vs {w, q}: none -> 0.
    assert index.scores({"x", "y", "v"}).tolist() == [0.5, 0.0]
    # {q, unknown}: 1 shared of 3 with b.
    assert index.scores({"q", "unknown"}).tolist() == [0.0, pytest.approx(1 / 3)]
    assert index.scores({"nothing"}).tolist() == [0.0, 0.0]


def test_definitions_chunking_indexes_innermost_definitions(tmp_path: Path):
    (tmp_path / "a.py").write_text(
        "import os\n\nclass Box:\n    def open(self):\n        return os.sep\n\n"
        "    def close(self):\n        pass\n\n\ndef helper():\n    return 1\n"
    )
    (tmp_path / "broken.py").write_text("def broken(:\n    pass\n")
    counts: Counter = Counter()
    index = retrieval.build_index(tmp_path, languages=["python"], retrieval=RetrievalParams(chunking="definitions"),
                                  max_file_bytes=10_000, generated=[], counts=counts)
    assert list(zip(index.chunk_start.tolist(), index.chunk_end.tolist())) == [(4, 5), (7, 8), (11, 12)]
    assert counts["files_skipped_syntax_error"] == 1 and counts["chunks_indexed"] == 3


def test_containment_is_the_share_of_the_part_found_in_the_whole():
    assert containment({"a", "b", "c", "d"}, {"a", "b", "x"}) == 0.5
    assert containment(set(), {"a"}) == 0.0


DOC = "Return the checksum of the data folded modulo the largest prime below sixty five thousand so that it always fits"


def test_leak_reasons_per_kind():
    # identifier: a whole identifier only, not a part of a longer one.
    assert retrieval.leak_reason("x = area(1)", "area", "identifier", NEAR) == "target_identifier"
    assert retrieval.leak_reason("x = area_of(1) + $area", "area", "identifier", NEAR) is None
    # text: verbatim whatever the whitespace ...
    assert retrieval.leak_reason('    """Return the\n    checksum."""', "Return the checksum.", "text", NEAR) == "target_text"
    # ... or a near-duplicate: DOC has 20 tokens, 16 5-grams; one word changed in the middle
    # ("prime" -> "number", token 11) breaks the 5 5-grams holding it: 11/16 = 0.6875 < 0.7.
    assert retrieval.leak_reason(DOC.replace("prime", "number"), DOC, "text", NEAR) is None
    # the last word changed breaks 1 5-gram: 15/16 = 0.9375 >= 0.7.
    assert retrieval.leak_reason(DOC.replace("fits", "stays"), DOC, "text", NEAR) == "target_near_duplicate"
    # a target under 20 tokens is only refused verbatim.
    short = "Return the checksum of the data folded"
    assert retrieval.leak_reason("Return the checksum of the data unfolded", short, "text", NEAR) is None
    # none (completion): nothing is refused.
    assert retrieval.leak_reason("return total", "return total", None, NEAR) is None


def test_every_task_says_how_it_queries_and_what_it_refuses():
    from repotune.tasks import TASKS

    assert {name: (m.RETRIEVAL_QUERY, m.CONTEXT_LEAK) for name, m in TASKS.items()} == {
        "completion": ("tail", None), "docstring": ("whole", "text"), "method_name": ("whole", "identifier"),
    }


def test_retrieval_params_reject_unknown_keys_and_gapped_windows(tmp_path: Path):
    with pytest.raises(ParamsError) as bad:
        params.parse({"source": {"url": "x"}, "retrieval": {"topk": 3, "chunking": "files"}})
    message = str(bad.value)
    assert "retrieval.topk is not a known key (valid keys: enabled, chunking, window_lines" in message
    assert "retrieval.chunking must be 'lines' or 'definitions', got 'files'" in message
    with pytest.raises(ParamsError, match=r"retrieval: window_stride \(30\) must be at most window_lines \(20\)"):
        params.parse({"source": {"url": "x"}, "retrieval": {"window_stride": 30}})
    assert params.parse({"source": {"url": "x"}}).retrieval.enabled is False


# --- the stage on crafted repositories ---------------------------------------------------------


def test_method_name_context_never_holds_the_name_nor_the_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mask = "def <MASK>(data, seed):\n    total = seed\n    for byte in data:\n        total = (total * 31 + byte) % 65521\n    return total\n"
    splits = {
        "train": [sample("pkg/other.py", "render_page", "def <MASK>(title, body):\n    return title + body\n",
                         "render_page", "method_name")],
        "test": [sample("pkg/checksum.py", "compute_checksum", mask, "compute_checksum", "method_name")],
        # Another repository's file at a path that also exists here: not its own file.
        "ood": [sample("pkg/other.py", "join_parts", "def <MASK>(title, body):\n    return body + title\n",
                       "join_parts", "method_name", repo="elsewhere")],
    }
    out, metrics = run_retrieve(tmp_path, FILES, splits, "method_name")
    # test: query {def, MASK, data, seed, total, for, byte, in, return} (9). Own file
    # checksum.py shares 8 of 10 (refused: own_file); uses.py shares def, data, seed, total,
    # return: 5 of 9 + 12 - 5 = 16 (0.3125) but calls compute_checksum (refused: the answer);
    # other.py {def, render_page, title, body, return} shares def, return: 2 / 12.
    assert spans(out["test"][0]) == [("pkg/other.py", 1, 2, 0.166667)]
    assert out["test"][0]["chunks"][0]["text"] == OTHER_PY
    assert metrics["splits"]["test"] == {
        "excluded_own_file": 1, "excluded_target_identifier": 1, "samples": 1, "samples_without_context": 0,
        "target_in_context": 0,
    }
    # train: only train files (other.py, its own) may feed it: nothing left.
    assert out["train"][0]["chunks"] == []
    assert metrics["splits"]["train"] == {
        "excluded_not_train_file": 2, "excluded_own_file": 1, "samples": 1, "samples_without_context": 1,
        "target_in_context": 0,
    }
    # ood: {def, MASK, title, body, return} vs other.py: 4 / 6; checksum.py: 2 / 12; uses.py 2 / 15.
    assert spans(out["ood"][0]) == [("pkg/other.py", 1, 2, 0.666667), ("pkg/checksum.py", 1, 5, 0.166667)]
    assert out["ood"][0]["repo"] == str(tmp_path / "source")  # the context's repository
    assert (metrics["files_indexed"], metrics["chunks_indexed"], metrics["samples"]) == (3, 3, 3)
    assert metrics["excluded_own_file"] == 2 and metrics["excluded_target_identifier"] == 1


def test_docstring_context_refuses_a_near_copy_of_the_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {
        "pkg/checksum.py": CHECKSUM_PY,
        # The only chunk close to the query holds the docstring with its last word changed.
        "pkg/wrapper.py": f'def checksum_of(data, seed):\n    """{DOC.replace("fits", "stays")}"""\n'
                          "    return compute_checksum(data, seed)\n",
        "pkg/other.py": OTHER_PY,
    }
    code = "def compute_checksum(data, seed):\n    total = seed\n    return total\n"
    splits = {"test": [sample("pkg/checksum.py", "compute_checksum", code, DOC, "docstring")]}
    out, metrics = run_retrieve(tmp_path, files, splits, "docstring")
    # query {def, compute_checksum, data, seed, total, return}; other.py shares def, return: 2 / 9.
    assert spans(out["test"][0]) == [("pkg/other.py", 1, 2, 0.222222)]
    assert metrics["excluded_target_near_duplicate"] == 1 and metrics["excluded_own_file"] == 1


def test_completion_keeps_copies_of_the_target_line_and_flags_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {**FILES, "pkg/copy.py": CHECKSUM_PY.replace("compute_checksum", "checksum_again")}
    prefix = "def compute_checksum(data, seed):\n    total = seed\n    for byte in data:\n        total = (total"
    splits = {"test": [
        sample("pkg/checksum.py", "window", prefix, " * 31 + byte) % 65521", "completion"),
        sample("pkg/checksum.py", "window2", prefix, " * 37 + byte) % 65521", "completion"),
    ]}
    out, metrics = run_retrieve(tmp_path, files, splits, "completion", query_lines=2)
    # The last 2 lines of the prefix: {for, byte, in, data, total}; copy.py's identifiers
    # {def, checksum_again, data, seed, total, for, byte, in, return} holds all 5: 5 / 9.
    first = out["test"][0]
    assert spans(first)[0] == ("pkg/copy.py", 1, 5, 0.555556)
    assert first["target_in_context"] is True and out["test"][1]["target_in_context"] is False
    assert metrics["target_in_context"] == 1


def test_the_context_budget_cuts_the_best_chunk_and_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    splits = {"ood": [sample("x.py", "f", "def <MASK>(title, body):\n    return body + title\n", "join_parts",
                             "method_name", repo="elsewhere")]}
    out, metrics = run_retrieve(tmp_path, FILES, splits, "method_name", context_tokens=6)
    # other.py's first 6 tokens: def render_page ( title , body
    assert out["ood"][0]["chunks"] == [{"path": "pkg/other.py", "start_line": 1, "end_line": 1, "score": 0.666667,
                                        "text": "def render_page(title, body", "cut": True}]
    assert metrics["chunks_over_budget"] == 1


def test_disabled_writes_empty_files_without_reading_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, retrieval={"enabled": False})
    load_stage("retrieve").main(["--repo", str(tmp_path / "missing"), "--split", str(tmp_path / "missing")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "data/retrieved").iterdir()} == {
        f"{name}.jsonl": b"" for name in retrieval.SPLITS
    }
    assert io.read_json(tmp_path / "metrics/retrieve.json") == {"enabled": False}


@pytest.mark.parametrize("chunking", ["lines", "definitions"])
def test_retrieve_is_deterministic(tmp_path, monkeypatch, chunking):
    source = tmp_path / "source"
    git_repo(source, FILES)
    outputs = []
    for attempt in ("a", "b"):
        work = tmp_path / attempt
        work.mkdir()
        monkeypatch.chdir(work)
        splits = {
            "train": [sample("pkg/other.py", "render_page", "def <MASK>(title, body):\n    return title\n", "render_page",
                             "method_name")],
            "test": [sample("pkg/checksum.py", "compute_checksum", "def <MASK>(data, seed):\n    return seed\n",
                            "compute_checksum", "method_name")],
        }
        run_retrieve(work, source, splits, "method_name", chunking=chunking)
        outputs.append({p.name: p.read_bytes() for p in sorted((work / "data/retrieved").iterdir())})
    assert outputs[0] == outputs[1] and outputs[0]["test.jsonl"]
