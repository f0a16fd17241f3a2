"""Filter reasons, truncation, duplicates; split grouping, fractions and determinism."""

from __future__ import annotations

import pytest

from repotune.filters import count_tokens, filter_samples, truncate_tokens
from repotune.languages.python import is_test
from repotune.params import FilterParams, SplitParams
from repotune.split import split_samples
from repotune.tasks import docstring

LONG = "Return the thing that this function computes from its many and varied arguments, after checking each of them."


def rec(name: str, target: str = LONG, code: str | None = None, path: str = "a.py") -> dict:
    return {"id": f"{path}:{name}", "path": path, "language": "python", "name": name, "target": target,
            "is_test": is_test(name),
            "input": code if code is not None else f"def {name.split('.')[-1]}(x):\n    return x\n"}


def test_tokens_are_words_and_symbols():
    assert count_tokens("self.x = 1") == 5
    assert count_tokens("") == 0
    assert truncate_tokens("a b c d", 2) == ("a b", True)
    assert truncate_tokens("a b", 2) == ("a b", False)
    assert truncate_tokens("a b  \n", 2) == ("a b  \n", False)  # nothing cut: left as it is
    # A tail keeps the last tokens from the start of their line: the end stays byte-identical.
    assert truncate_tokens("a b\nc d e\n  f(g", 4, keep="tail") == ("  f(g", True)
    assert truncate_tokens("a b\nc d\n  f(g", 5, keep="tail") == ("c d\n  f(g", True)


def test_every_drop_reason_is_counted():
    records = [
        rec("short", target="Too short."),
        rec("Cls.__repr__"),
        rec("Cls.__init__"),
        rec("test_thing"),
        rec("TestSuite.helper"),
        rec("_private"),
        rec("kept"),
        rec("copy", code="def kept(x):\n        return   x\n"),  # same input as `kept`, other spacing
        rec("other.kept", code="def kept(y):\n    return y\n"),  # same target and short name
    ]
    kept, counts = filter_samples(records, FilterParams(), "docstring", docstring.Filter(drop_private=True))
    assert [r["name"] for r in kept] == ["Cls.__init__", "kept"]
    assert counts == {
        "seen": 9, "kept": 2, "dropped_short_target": 1, "dropped_dunder": 1, "dropped_test": 2,
        "dropped_private": 1, "dropped_duplicate_input": 1, "dropped_duplicate_target_name": 1,
        "truncated_input": 0,
    }
    assert sum(v for k, v in counts.items() if k.startswith("dropped_")) + counts["kept"] == counts["seen"]


def test_switches_turn_exclusions_off():
    records = [rec("Cls.__repr__"), rec("test_thing"), rec("_private")]
    kept, _ = filter_samples(records, FilterParams(drop_dunder=False, drop_tests=False, drop_duplicates=False), "docstring")
    assert len(kept) == 3


def test_long_inputs_are_truncated_and_marked():
    code = "def f(x):\n" + "    x = x + 1\n" * 100
    kept, counts = filter_samples([rec("f", code=code)], FilterParams(max_input_tokens=50), "docstring")
    assert count_tokens(kept[0]["input"]) == 50
    assert kept[0]["input_truncated"] is True
    assert code.startswith(kept[0]["input"])
    assert counts["truncated_input"] == 1


def many(n_files: int = 60, per_file: int = 5) -> list[dict]:
    return [rec(f"f{i}", path=f"pkg/m{f}.py") | {"id": f"{f}-{i}"} for f in range(n_files) for i in range(per_file)]


def test_file_split_never_puts_a_file_in_two_splits():
    splits, counts = split_samples(many(), SplitParams())
    paths = {name: {r["path"] for r in rs} for name, rs in splits.items()}
    assert not (paths["train"] & paths["test"]) and not (paths["train"] & paths["val"]) and not (paths["val"] & paths["test"])
    assert counts["files_in_several_splits"] == 0
    assert sum(len(rs) for rs in splits.values()) == counts["samples"] == 300
    assert 0.6 < counts["train_fraction"] < 0.95


def test_split_is_deterministic_and_depends_on_seed():
    a, _ = split_samples(many(), SplitParams())
    b, _ = split_samples(list(reversed(many())), SplitParams())
    assert {k: sorted(r["id"] for r in v) for k, v in a.items()} == {k: sorted(r["id"] for r in v) for k, v in b.items()}
    c, _ = split_samples(many(), SplitParams(seed=7))
    assert {r["id"] for r in a["test"]} != {r["id"] for r in c["test"]}


def test_sample_split_spreads_a_file_over_splits():
    splits, counts = split_samples(many(n_files=2, per_file=200), SplitParams(by="sample"))
    assert counts["files_in_several_splits"] > 0
    assert abs(counts["train_fraction"] - 0.8) < 0.08


def files_of_sizes(sizes: list[int]) -> list[dict]:
    return [rec(f"f{i}", path=f"pkg/m{f}.py") | {"id": f"{f}-{i}"} for f, n in enumerate(sizes) for i in range(n)]


@pytest.mark.parametrize(
    "sizes",
    [
        [5] * 60,                                   # even files
        [1] * 40 + [30, 25, 20],                    # a few big files among many small ones
        [60, 30, 15, 8, 5, 4, 3, 2, 1, 1, 1],       # the lumpy small-library shape: 130 samples in 11 files
        [17, 3, 9, 12, 1, 1, 2, 40, 6, 6, 6, 7, 8, 5, 6],  # a 15-file library
    ],
)
def test_balanced_file_split_comes_as_close_to_the_targets_as_whole_files_allow(sizes):
    records = files_of_sizes(sizes)
    splits, counts = split_samples(records, SplitParams())
    assert counts["files_in_several_splits"] == 0
    assert counts["samples"] == sum(sizes) == sum(len(v) for v in splits.values())
    largest = max(sizes)
    for name, target in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert counts[f"{name}_target"] == target
        # Greedy on the running deficit: off by at most one file's samples.
        assert abs(len(splits[name]) - target * sum(sizes)) <= largest, (name, counts)
    assert counts["test_samples"] > 0 and counts["val_samples"] > 0


def test_the_hash_split_of_a_small_library_is_no_longer_lumpy():
    # 15 files, 129 samples: the old hash-of-path split gave 3 test samples here.
    sizes = [12, 10, 9, 9, 9, 9, 9, 8, 8, 9, 9, 9, 9, 5, 5]
    _, counts = split_samples(files_of_sizes(sizes), SplitParams())
    assert counts["samples"] == 129
    # Within one typical file (9 samples) of the 12.9 each of val and test should get.
    assert abs(counts["test_samples"] - 12.9) <= 9 and abs(counts["val_samples"] - 12.9) <= 9


def test_a_zero_target_gets_nothing():
    splits, counts = split_samples(many(), SplitParams(train=0.9, val=0.0, test=0.1))
    assert splits["val"] == [] and counts["val_target"] == 0.0
