"""Near-duplicates: n-gram sets, exact Jaccard, clusters, cross-split removal and its counts."""

from __future__ import annotations

import pytest

from repotune.dedup import clusters, jaccard, near_duplicate_pairs, remove_near_duplicates, shingles

DEFAULTS = {"threshold": 0.7, "num_perm": 256, "ngram": 5, "min_tokens": 20, "seed": 42}

# A real-looking function (75 code tokens, 71 shingles) and its disguised copies.
ORIGINAL = '''def read_config(path, defaults):
    """Read the file."""
    values = dict(defaults)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values
'''
# Reformatted (black-style): other line breaks and spacing, and one token more (the magic
# trailing comma after `defaults`).
REFORMATTED = '''def read_config(
        path,
        defaults,
):
    """Read the file."""
    values = dict( defaults )
    with open(path,
              encoding = "utf-8") as handle:
        for line in handle:
            key, _, value = line.partition( "=" )
            values[ key.strip() ] = value.strip()
    return values
'''
# One identifier renamed at its two uses (handle -> stream), 5 tokens apart.
RENAMED = ORIGINAL.replace("handle", "stream")
UNRELATED = '''def render_table(rows, widths):
    """Format rows."""
    out = []
    for row in rows:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)]
        out.append(" | ".join(cells))
    return "\\n".join(out)
'''

METHOD_A = '''    def push(self, item):
        if len(self.items) >= self.limit:
            raise OverflowError("stack is full: %d items" % self.limit)
        self.items.append(item)
        self.pushed += 1
'''
METHOD_B = '''    def pop(self):
        if not self.items:
            raise IndexError("pop from an empty stack of limit %d" % self.limit)
        self.popped += 1
        return self.items.pop()
'''
METHOD_C = '''    def peek(self, default=None):
        if not self.items:
            return default
        return self.items[-1]
'''
CLASS_ABC = "class Stack:\n" + METHOD_A + METHOD_B + METHOD_C
CLASS_CAB = "class Stack:\n" + METHOD_C + METHOD_A + METHOD_B


def test_shingles_are_sets_of_n_token_runs():
    assert shingles("a b c d e f", 5) == {"a b c d e", "b c d e f"}
    assert shingles("x = f()", 5) == {"x = f ( )"}  # exactly 5 tokens: one shingle
    assert shingles("x = 1", 5) == {"x = 1"}  # fewer: one shingle of them all
    assert shingles("  \n", 5) == set()
    # Whitespace and line breaks are not tokens: a reformatted text has the same shingles.
    assert shingles("f(a,\n    b)", 3) == shingles("f( a , b )", 3) == {"f ( a", "( a ,", "a , b", ", b )"}


def test_jaccard_by_hand():
    # {abcde, bcdef} vs {abcde, bcdeg}: 1 shared of 3.
    assert jaccard(shingles("a b c d e f", 5), shingles("a b c d e g", 5)) == pytest.approx(1 / 3)
    # 60 tokens (56 shingles); one token changed in the middle changes the 5 shingles over it:
    # 51 shared, 56 + 5 in the union.
    words = [f"w{i}" for i in range(60)]
    changed = words[:30] + ["z"] + words[31:]
    assert jaccard(shingles(" ".join(words), 5), shingles(" ".join(changed), 5)) == pytest.approx(51 / 61)
    assert jaccard(set(), set()) == 0.0


def test_crafted_copies_are_near_duplicates_and_unrelated_code_is_not():
    # The reformatted copy: spacing is no token; the inserted comma is in 5 new shingles and
    # splits the 4 that ran over "defaults )": 71 - 4 = 67 shared, 71 + 5 in the union.
    # The renamed copy: the two uses of `handle`
    # ("as handle : for line in handle") are 5 tokens apart, so the shingles over either are
    # the 10 windows starting 4 before the first to the second: 71 - 10 = 61 shared, 71 + 10
    # in the union.
    assert jaccard(shingles(ORIGINAL, 5), shingles(REFORMATTED, 5)) == pytest.approx(67 / 76)
    assert jaccard(shingles(ORIGINAL, 5), shingles(RENAMED, 5)) == pytest.approx(61 / 81)
    # Reordered methods (A B C -> C A B): only shingles over the seams "Stack : | A" and "B | C"
    # (ABC) and "Stack : | C", "C | A" (CAB) differ, 4 per seam at most, of 114.
    assert jaccard(shingles(CLASS_ABC, 5), shingles(CLASS_CAB, 5)) >= (114 - 8) / (114 + 8)
    texts = {"1-orig": ORIGINAL, "2-reformatted": REFORMATTED, "3-renamed": RENAMED, "4-other": UNRELATED,
             "5-abc": CLASS_ABC, "6-cab": CLASS_CAB}
    pairs = near_duplicate_pairs(texts, **DEFAULTS)
    assert clusters(texts, pairs) == [["1-orig", "2-reformatted", "3-renamed"], ["5-abc", "6-cab"]]


def test_a_single_rename_of_a_frequent_identifier_can_fall_below_the_threshold():
    # Renaming `values` (4 uses, spread out) breaks up to 20 shingles of each side: ORIGINAL and
    # this copy share too little; a stricter threshold is no remedy, a lower one is.
    renamed = ORIGINAL.replace("values", "result").replace("value", "v")
    similarity = jaccard(shingles(ORIGINAL, 5), shingles(renamed, 5))
    assert similarity < 0.7
    assert near_duplicate_pairs({"a": ORIGINAL, "b": renamed}, **DEFAULTS) == []
    assert near_duplicate_pairs({"a": ORIGINAL, "b": renamed}, **{**DEFAULTS, "threshold": similarity * 0.9}) == [("a", "b")]


def test_short_texts_are_never_compared():
    same = "return x + 1"  # 4 tokens, identical: under min_tokens 20
    assert near_duplicate_pairs({"a": same, "b": same}, **DEFAULTS) == []
    assert near_duplicate_pairs({"a": same, "b": same}, **{**DEFAULTS, "min_tokens": 4}) == [("a", "b")]


def test_clusters_are_connected_components_in_id_order():
    assert clusters(["d", "c", "b", "a", "e"], [("c", "d"), ("a", "d"), ("b", "e")]) == [["a", "c", "d"], ["b", "e"]]
    assert clusters(["a", "b"], []) == []


def rec(id_: str, code: str, target: str = "Read a config file of key=value lines over a dict of defaults, later keys win.",
        path: str | None = None) -> dict:
    return {"id": id_, "path": path or f"{id_}.py", "input": code, "target": target}


def splits_with_leaks() -> dict[str, list[dict]]:
    return {
        "train": [rec("t1", ORIGINAL), rec("t2", UNRELATED), rec("t3", REFORMATTED)],
        "val": [rec("v1", RENAMED), rec("v2", CLASS_ABC)],
        "test": [rec("x1", REFORMATTED), rec("x2", CLASS_CAB)],
    }


def ids(splits: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {name: [r["id"] for r in records] for name, records in splits.items()}


def test_cross_split_drop_removes_test_and_val_copies_of_train_and_counts_them():
    out, counts = remove_near_duplicates(
        splits_with_leaks(), fields=["input"], cross_split="drop", within_train=True, **DEFAULTS
    )
    # v2 and x2 are copies of each other but of nothing in train: both stay.
    assert ids(out) == {"train": ["t1", "t2"], "val": ["v2"], "test": ["x2"]}
    assert counts == {
        # t1-t3, t1-v1, t1-x1, t3-x1 (equal), v2-x2; not the renamed v1 with a reformatted
        # t3 or x1: the two changes together leave too little in common.
        "near_duplicate_pairs_input": 5,
        "near_duplicates_val_of_train": 1,
        "near_duplicates_val_dropped": 1,
        "near_duplicates_test_of_train": 1,
        "near_duplicates_test_dropped": 1,
        "near_duplicate_clusters_train": 1,  # {t1, t3}: t1 (smaller id) kept
        "near_duplicates_train_dropped": 1,
    }


def test_cross_split_move_puts_the_copies_in_train():
    out, counts = remove_near_duplicates(
        splits_with_leaks(), fields=["input"], cross_split="move", within_train=False, **DEFAULTS
    )
    assert ids(out) == {"train": ["t1", "t2", "t3", "v1", "x1"], "val": ["v2"], "test": ["x2"]}
    assert counts["near_duplicates_test_moved"] == counts["near_duplicates_test_of_train"] == 1
    assert "near_duplicates_train_dropped" not in counts
    # Moved and then deduplicated within train: one of {t1, t3, v1, x1} stays, the smallest id.
    out, counts = remove_near_duplicates(
        splits_with_leaks(), fields=["input"], cross_split="move", within_train=True, **DEFAULTS
    )
    assert ids(out)["train"] == ["t1", "t2"]
    assert counts["near_duplicates_train_dropped"] == 3


def test_a_shared_target_makes_a_pair_when_targets_are_compared():
    doc = "Return the sum of the two given numbers, raising TypeError when either of them is not a number."
    splits = {"train": [rec("a", ORIGINAL, doc)], "val": [], "test": [rec("b", UNRELATED, doc)]}
    out, counts = remove_near_duplicates(splits, fields=["input"], cross_split="drop", within_train=True, **DEFAULTS)
    assert ids(out)["test"] == ["b"]
    out, counts = remove_near_duplicates(
        splits, fields=["input", "target"], cross_split="drop", within_train=True, **DEFAULTS
    )
    assert ids(out)["test"] == []
    assert (counts["near_duplicate_pairs_input"], counts["near_duplicate_pairs_target"]) == (0, 1)


def test_the_result_is_the_same_every_run_and_needs_unique_ids():
    first = remove_near_duplicates(splits_with_leaks(), fields=["input", "target"], cross_split="drop",
                                   within_train=True, **DEFAULTS)
    again = remove_near_duplicates(splits_with_leaks(), fields=["input", "target"], cross_split="drop",
                                   within_train=True, **DEFAULTS)
    assert first == again
    twice = {"train": [rec("a", ORIGINAL)], "val": [], "test": [rec("a", UNRELATED)]}
    with pytest.raises(ValueError, match="unique sample ids"):
        remove_near_duplicates(twice, fields=["input"], cross_split="drop", within_train=True, **DEFAULTS)


def test_bad_near_duplicate_params_are_one_line_each():
    from repotune import params
    from repotune.errors import ParamsError

    raw = {"source": {"url": "."}, "split": {"near_duplicates": {
        "threshold": 1.5, "cross_split": "keep", "fields": ["code"], "ngram": 0}}}
    with pytest.raises(ParamsError) as info:
        params.parse(raw)
    lines = str(info.value).splitlines()
    assert "params.yaml: split.near_duplicates.threshold must be less than or equal to 1, got 1.5" in lines
    assert "params.yaml: split.near_duplicates.cross_split must be 'drop' or 'move', got 'keep'" in lines
    assert "params.yaml: split.near_duplicates.fields.0 must be 'input' or 'target', got 'code'" in lines
    assert "params.yaml: split.near_duplicates.ngram must be greater than 0, got 0" in lines
    assert params.parse({"source": {"url": "."}}).split.near_duplicates.num_perm == 256


def test_the_split_stage_removes_leaked_copies_and_reports_them(tmp_path):
    """40 files of one distinct function each, and 10 of them copied (reformatted) into a
    second file: wherever the split puts an original and its copy in train and val/test, the
    val/test one goes and is counted; the stage's bytes are the same on a second run."""
    import random
    from pathlib import Path

    import yaml

    from conftest import load_stage
    from repotune import atomic
    from repotune.params import SplitParams
    from repotune.split import split_samples

    rng = random.Random(0)
    words = [f"name{i}" for i in range(400)]

    def function(i: int) -> str:
        body = " + ".join(rng.sample(words, 12))
        return f"def f{i}(a, b):\n    x = {body}\n    return x\n"

    records = []
    for i in range(40):
        code = function(i)
        records.append({"id": f"{i:02d}a", "path": f"m{i:02d}.py", "input": code, "target": f"Doc {i}."})
        if i < 10:
            copy = code.replace(" + ", " +\n        ")  # reformatted: the same tokens
            records.append({"id": f"{i:02d}b", "path": f"copy{i:02d}.py", "input": copy, "target": f"Copy {i}."})
    records.sort(key=lambda r: r["path"])
    atomic.write_jsonl(tmp_path / "filtered.jsonl", records)
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["split"]["min_test_samples"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))

    # Where the (unchanged) balanced file split puts each original and its copy.
    before, _ = split_samples(records, SplitParams(**{k: v for k, v in raw["split"].items() if k != "near_duplicates"}))
    where = {r["id"]: name for name, rs in before.items() for r in rs}
    leaked = {name: sum(1 for i in range(10) for a, b in ((f"{i:02d}a", f"{i:02d}b"), (f"{i:02d}b", f"{i:02d}a"))
                        if where[a] == name and where[b] == "train") for name in ("val", "test")}
    in_train = sum(1 for i in range(10) if where[f"{i:02d}a"] == where[f"{i:02d}b"] == "train")
    # With seed 42 the 10 pairs fall: 7 both in train, 2 test + 1 val copies of train ones.
    assert (leaked, in_train) == ({"val": 1, "test": 2}, 7)

    atomic.write_jsonl(tmp_path / "scores.jsonl", [])  # what the judge stage writes when disabled
    args = ["--params", str(tmp_path / "params.yaml"), "--in", str(tmp_path / "filtered.jsonl"),
            "--scores", str(tmp_path / "scores.jsonl"),
            "--out", str(tmp_path / "split"), "--metrics", str(tmp_path / "split.json")]
    load_stage("split").main(args)
    metrics = atomic.read_json(tmp_path / "split.json")
    assert metrics["near_duplicate_pairs_input"] == 10
    assert metrics["near_duplicate_pairs_target"] == 0  # targets under min_tokens
    assert metrics["near_duplicates_test_of_train"] == metrics["near_duplicates_test_dropped"] == leaked["test"]
    assert metrics["near_duplicates_val_of_train"] == metrics["near_duplicates_val_dropped"] == leaked["val"]
    assert metrics["near_duplicates_train_dropped"] == metrics["near_duplicate_clusters_train"] == in_train
    assert metrics["samples"] == 50 - leaked["test"] - leaked["val"] - in_train
    test_ids = {r["id"] for r in atomic.read_jsonl(tmp_path / "split/test.jsonl")}
    assert test_ids == {k for k, name in where.items() if name == "test"} - {
        f"{i:02d}{s}" for i in range(10) for s in "ab" if where[f"{i:02d}{'b' if s == 'a' else 'a'}"] == "train"}
    first = {p.name: p.read_bytes() for p in sorted((tmp_path / "split").iterdir())}
    load_stage("split").main(args)
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "split").iterdir())} == first
