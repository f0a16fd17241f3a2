"""Stage `retrieve` and repotune.retrieval: chunks, BM25 scores, no leaks, determinism.

The stage tests clone a repository made here with gitpython (the clone stage, in-process) and
hand-write the split records pointing into it, so that which file holds which split's sample,
and which chunk would give a target away, is fixed by the test. Scores are checked against
Lucene's BM25 written out here (:func:`lucene_bm25`) and worked by hand in the unit test.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import git_repo, load_stage, write_params

from repotune import atomic, params, retrieval
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
        atomic.write_jsonl(work / "data/split" / f"{name}.jsonl", splits.get(name, []))
    atomic.write_jsonl(work / "data/ood.jsonl", splits.get("ood", []))
    load_stage("retrieve").main([])
    out = {name: atomic.read_jsonl(work / "data/retrieved/retrieval" / f"{name}.jsonl") for name in retrieval.SPLITS}
    return out, atomic.read_json(work / "metrics/retrieve.json")


def read_context(work: Path, context: str) -> dict[str, list[dict]]:
    return {name: atomic.read_jsonl(work / "data/retrieved" / context / f"{name}.jsonl") for name in retrieval.SPLITS}


def spans(record: dict) -> list[tuple[str, int, int, float]]:
    return [(c["path"], c["start_line"], c["end_line"], c["score"]) for c in record["chunks"]]


def lucene_bm25(query: set[str], docs: dict[str, str], k1: float = 1.5, b: float = 0.75) -> dict[str, float]:
    """Lucene's BM25 of each doc (name -> text, one chunk each) for the identifiers of `query`,
    each counted once: sum over shared t of ln(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1
    * (1 - b + b * len / mean len)); rounded as the stage writes it."""
    tokens = {name: re.findall(r"(?<![\w$])[A-Za-z_$][\w$]*", text) for name, text in docs.items()}
    mean = sum(map(len, tokens.values())) / len(tokens)
    scores = {}
    for name, toks in tokens.items():
        score = 0.0
        for term in query & set(toks):
            df = sum(term in other for other in tokens.values())
            tf = toks.count(term)
            score += math.log(1 + (len(docs) - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * len(toks) / mean))
        scores[name] = round(score, 6)
    return scores


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


def test_bm25_scores_worked_by_hand(tmp_path: Path):
    (tmp_path / "a.py").write_text("x = y\n\nz = x\n")  # one window: x y z x (4 identifiers)
    (tmp_path / "b.py").write_text("w = q  # 1e5 0x1F\n")  # w q (numbers hold no identifier)
    counts: Counter = Counter()
    index = retrieval.build_index(tmp_path, languages=["python"], retrieval=RetrievalParams(),
                                  max_file_bytes=10_000, generated=[], counts=counts)
    assert (index.paths, counts["chunks_indexed"], counts["files_indexed"]) == (["a.py", "b.py"], 2, 2)
    # N = 2 chunks, mean length 3; a term in one chunk: idf = ln(1 + 1.5 / 1.5) = ln 2.
    # {x, y, v} in a (length 4, k1 (1 - b + b 4/3) = 1.875): x twice 2 / 3.875, y once 1 / 2.875:
    # ln 2 (0.516129 + 0.347826) = 0.693147 * 0.863955 = 0.598848.
    assert index.scores({"x", "y", "v"}).tolist() == [pytest.approx(0.598848, abs=1e-6), 0.0]
    # {q, unknown} in b (length 2, k1 (0.25 + 0.5) = 1.125): ln 2 / 2.125 = 0.326187.
    assert index.scores({"q", "unknown"}).tolist() == [0.0, pytest.approx(0.326187, abs=1e-6)]
    assert index.scores({"nothing"}).tolist() == [0.0, 0.0]
    assert index.scores({"e5", "x1F"}).tolist() == [0.0, 0.0]


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
    # test: query {def, MASK, data, seed, total, for, byte, in, return}. The own file
    # checksum.py scores best (refused: own_file); uses.py shares def, data, seed, total, return
    # but calls compute_checksum (refused: the answer); other.py shares def, return only.
    test_query = {"def", "MASK", "data", "seed", "total", "for", "byte", "in", "return"}
    scores = lucene_bm25(test_query, FILES)
    assert scores["pkg/checksum.py"] > scores["pkg/uses.py"] > scores["pkg/other.py"] > 0
    assert spans(out["test"][0]) == [("pkg/other.py", 1, 2, scores["pkg/other.py"])]
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
    # ood: {def, MASK, title, body, return}: other.py shares all but MASK; checksum.py and
    # uses.py def and return only, checksum.py being the shorter (15 identifiers against 16).
    ood = lucene_bm25({"def", "MASK", "title", "body", "return"}, FILES)
    assert ood["pkg/other.py"] > ood["pkg/checksum.py"] > ood["pkg/uses.py"] > 0
    assert spans(out["ood"][0]) == [("pkg/other.py", 1, 2, ood["pkg/other.py"]),
                                    ("pkg/checksum.py", 1, 5, ood["pkg/checksum.py"])]
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
    # query {def, compute_checksum, data, seed, total, return}: wrapper.py (sharing all but
    # total) ranks above other.py (def, return) but is refused.
    scores = lucene_bm25({"def", "compute_checksum", "data", "seed", "total", "return"}, files)
    assert scores["pkg/wrapper.py"] > scores["pkg/other.py"] > 0
    assert spans(out["test"][0]) == [("pkg/other.py", 1, 2, scores["pkg/other.py"])]
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
    # The last 2 lines of the prefix: {for, byte, in, data, total}; copy.py holds all 5, as does
    # the own file checksum.py (refused); uses.py 2, other.py none.
    scores = lucene_bm25({"for", "byte", "in", "data", "total"}, files)
    first = out["test"][0]
    assert spans(first) == [("pkg/copy.py", 1, 5, scores["pkg/copy.py"]), ("pkg/uses.py", 1, 6, scores["pkg/uses.py"])]
    assert first["target_in_context"] is True and out["test"][1]["target_in_context"] is False
    assert metrics["target_in_context"] == 1


def test_overlapping_windows_of_one_file_are_taken_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 30 lines: windows 1-20 (first_*, shared_*) and 11-30 (shared_*, last_*), tied on a query
    # of the shared lines: the first is taken, the second overlaps it; helper.py comes next.
    long_py = "".join(f"{part}_{i} = {i}\n" for part in ("first", "shared", "last") for i in range(1, 11))
    files = {"pkg/long.py": long_py, "pkg/helper.py": "helper = 0\n", "pkg/q.py": "x = 1\n"}
    query = "".join(f"shared_{i}\n" for i in range(1, 11)) + "helper\n"
    splits = {"test": [sample("pkg/q.py", "window", query, "x = 1", "completion")]}
    out, metrics = run_retrieve(tmp_path, files, splits, "completion", context_tokens=1000)
    assert [(c["path"], c["start_line"], c["end_line"]) for c in out["test"][0]["chunks"]] == [
        ("pkg/long.py", 1, 20), ("pkg/helper.py", 1, 1)
    ]
    assert metrics["excluded_overlap"] == 1


def test_the_context_budget_cuts_the_best_chunk_and_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    splits = {"ood": [sample("x.py", "f", "def <MASK>(title, body):\n    return body + title\n", "join_parts",
                             "method_name", repo="elsewhere")]}
    out, metrics = run_retrieve(tmp_path, FILES, splits, "method_name", context_tokens=6)
    # other.py's first 6 tokens: def render_page ( title , body
    score = lucene_bm25({"def", "MASK", "title", "body", "return"}, FILES)["pkg/other.py"]
    assert out["ood"][0]["chunks"] == [{"path": "pkg/other.py", "start_line": 1, "end_line": 1, "score": score,
                                        "text": "def render_page(title, body", "cut": True}]
    assert metrics["chunks_over_budget"] == 1


def test_disabled_writes_empty_files_without_reading_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, retrieval={"enabled": False})
    load_stage("retrieve").main(["--repo", str(tmp_path / "missing"), "--split", str(tmp_path / "missing")])
    assert {p.relative_to(tmp_path / "data/retrieved").as_posix(): p.read_bytes()
            for p in (tmp_path / "data/retrieved").rglob("*.jsonl")} == {
        f"{context}/{name}.jsonl": b"" for context in ("none", "retrieval", "prefix") for name in retrieval.SPLITS
    }
    assert atomic.read_json(tmp_path / "metrics/retrieve.json") == {"enabled": False}


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
        outputs.append({p.relative_to(work).as_posix(): p.read_bytes()
                        for p in sorted((work / "data/retrieved").rglob("*.jsonl"))})
    assert outputs[0] == outputs[1] and outputs[0]["data/retrieved/retrieval/test.jsonl"]
    assert outputs[0]["data/retrieved/prefix/test.jsonl"] and not outputs[0]["data/retrieved/none/test.jsonl"]


# --- the same-budget control: the sample's own file before its input --------------------------


def test_the_prefix_control_is_the_own_file_before_the_input_cut_to_the_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A completion window of checksum.py from line 3, after its indentation ("    for byte ..."):
    # the prefix is lines 1-2 and the indentation, so that prefix + input is the file as written.
    window = "for byte in data:\n        total = (total"
    test = sample("pkg/checksum.py", "window", window, " * 31 + byte) % 65521", "completion", start_line=3)
    ood = sample("x.py", "window", window, " * 31", "completion", start_line=3)
    run_retrieve(tmp_path, FILES, {"test": [test], "ood": [ood]}, "completion", context_tokens=1000)
    prefix = read_context(tmp_path, "prefix")
    before = "def compute_checksum(data, seed):\n    total = seed\n    "
    assert prefix["test"][0]["chunks"] == [{"path": "pkg/checksum.py", "start_line": 1, "end_line": 3,
                                           "text": before, "cut": False}]
    assert CHECKSUM_PY.startswith(before + window)
    assert prefix["ood"][0]["chunks"] == []  # another repository: not here
    assert read_context(tmp_path, "none") == {name: [] for name in retrieval.SPLITS}

    # The budget in code tokens, from a line start: "total = seed" is 3 tokens, line 1 is 11.
    run_retrieve(tmp_path, FILES, {"test": [test]}, "completion", context_tokens=4)
    chunk = read_context(tmp_path, "prefix")["test"][0]["chunks"][0]
    assert (chunk["start_line"], chunk["end_line"], chunk["text"], chunk["cut"]) == (2, 3, "    total = seed\n    ", True)
    prefix_metrics = atomic.read_json(tmp_path / "metrics/retrieve.json")["prefix"]
    assert prefix_metrics["splits"]["test"] == {"prefix_samples": 1, "prefix_target_in_context": 0,
                                                "prefix_without_context": 0}


def test_the_prefix_control_loses_the_lines_that_would_leak_the_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A masked method called two lines above it: the prefix stops before the call.
    files = {"pkg/calls.py": "import os\nx = 1\nresult = scale_all(x)\n\n\ndef scale_all(v):\n    return v * 2\n",
             **FILES}
    masked = sample("pkg/calls.py", "scale_all", "def <MASK>(v):\n    return v * 2\n", "scale_all", "method_name",
                    start_line=6)
    run_retrieve(tmp_path, files, {"test": [masked]}, "method_name", context_tokens=1000)
    chunks = read_context(tmp_path, "prefix")["test"][0]["chunks"]
    assert chunks == [{"path": "pkg/calls.py", "start_line": 1, "end_line": 2, "text": "import os\nx = 1\n",
                       "cut": False}]
    assert atomic.read_json(tmp_path / "metrics/retrieve.json")["prefix"]["prefix_trimmed_target_identifier"] == 1
