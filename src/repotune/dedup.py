"""Near-duplicate samples: MinHash + LSH over code-token n-grams, checked by exact Jaccard.

Two samples are near-duplicates when, for one of the compared fields (``input``, ``target``),
the Jaccard similarity of their sets of code-token n-grams (:mod:`repotune.codetokens`, n = 5
by default) is at least the threshold. MinHash signatures (datasketch, seeded) in an LSH index
only propose candidate pairs (banded for recall, see ``_LSH_WEIGHTS``); every candidate is then
checked with the exact Jaccard of the two n-gram sets, so a pair's fate never depends on a
MinHash estimate (LSH may still miss a pair just above the threshold: a recall loss of a few
percent, not a wrong drop). A text with fewer than
``min_tokens`` code tokens is never compared: a short docstring or a one-line target is too
small to call a copy.

Relation to Allamanis (2019), "The Adverse Effects of Code Duplication in Machine Learning
Models of Code": there, a file pair is a duplicate when the Jaccard similarity of its sets of
identifier and literal tokens is >= 0.8 and of their multisets >= 0.7. Here the sets are of
n-grams over every token (punctuation and keywords included) of one sample (a definition, a
window), which also weighs order: reordered statements or methods keep most n-grams (only those
spanning a seam change), a renamed identifier breaks the up-to-n n-grams around each use,
reformatting changes none. Allamanis's bag of identifiers treats any two samples with the same
vocabulary as copies, order aside; our n-grams demand shared runs of code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from repotune.codetokens import tokens

SPLITS = ("train", "val", "test")
# LSH bands chosen to weigh a missed pair 19x a false candidate (datasketch's (fp, fn) weights):
# every candidate is checked exactly, so false candidates cost only time. At threshold 0.7 and
# 256 permutations that is 36 bands of 7 rows: a pair at Jaccard 0.7 is a candidate with
# probability 0.955, at 0.75 with 0.994 (the default (0.5, 0.5) gives 0.51 and 0.77).
_LSH_WEIGHTS = (0.05, 0.95)


def shingles(text: str | list[str], ngram: int) -> set[str]:
    """The set of `ngram`-token runs of `text` (or of its tokens, given as a list), joined by one
    space (a token never holds a space, so the join is unambiguous). A text of fewer tokens is
    one shingle of all of them."""
    toks = tokens(text) if isinstance(text, str) else text
    if len(toks) <= ngram:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (0.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def containment(part: set[str], whole: set[str]) -> float:
    """|part & whole| / |part|: how much of `part` stands in `whole` (0.0 for an empty `part`).

    Jaccard's one-sided form, for a short text inside a longer one (a docstring inside a
    retrieved chunk), where the union is mostly the longer text and Jaccard stays low.
    """
    return len(part & whole) / len(part) if part else 0.0


def near_duplicate_pairs(
    texts: Mapping[str, str], *, threshold: float, num_perm: int, ngram: int, min_tokens: int, seed: int
) -> list[tuple[str, str]]:
    """Pairs ``(a, b)``, ``a < b``, of keys whose texts' n-gram sets have Jaccard >= `threshold`.

    Keys are indexed and queried in sorted order, so the result (sorted) is the same every run.
    """
    from datasketch import MinHash, MinHashLSH

    token_lists = {key: tokens(texts[key]) for key in sorted(texts)}
    sets = {key: shingles(toks, ngram) for key, toks in token_lists.items() if len(toks) >= min_tokens}
    keys = sorted(sets)
    if len(keys) < 2:
        return []
    signatures = MinHash.bulk([[s.encode() for s in sorted(sets[k])] for k in keys], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    for key, signature in zip(keys, signatures):
        lsh.insert(key, signature)
    pairs = set()
    for key, signature in zip(keys, signatures):
        for other in lsh.query(signature):
            if other > key and jaccard(sets[key], sets[other]) >= threshold:
                pairs.add((key, other))
    return sorted(pairs)


def clusters(keys: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected components of the near-duplicate graph, each sorted, of size >= 2, sorted."""
    parent = {k: k for k in keys}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            # The smaller id becomes the root: the representative is the smallest id.
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for k in sorted(parent):
        groups[root(k)].append(k)
    return sorted(g for g in groups.values() if len(g) > 1)


def remove_near_duplicates(
    splits: Mapping[str, Sequence[dict]],
    *,
    fields: Sequence[str],
    threshold: float,
    num_perm: int,
    ngram: int,
    min_tokens: int,
    cross_split: str,
    within_train: bool,
    seed: int,
) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Clean the splits of near-duplicates (records keyed by their ``id``; order kept).

    1. Every pair of samples (all splits together) that is a near-duplicate on any of `fields`
       is found (:func:`near_duplicate_pairs`).
    2. Across splits: a val or test sample with a near-duplicate in train is dropped
       (`cross_split` 'drop') or moved to the end of train ('move'; its file then has samples in
       two splits).
    3. Within train (`within_train`): of each cluster (connected component of near-duplicate
       pairs among the train samples, moved ones included) the sample with the smallest id is
       kept. So with 'move' and `within_train`, a moved sample survives only if its id is the
       smallest of its cluster.

    Returns:
        The new splits and the counts for metrics/split.json: ``near_duplicate_pairs_<field>``,
        ``near_duplicates_<split>_of_train`` (val and test samples with a near-duplicate in
        train, before the fix: the leakage the split had), ``near_duplicates_<split>_dropped`` or
        ``_moved``, ``near_duplicate_clusters_train`` and ``near_duplicates_train_dropped``.
    """
    where = {r["id"]: name for name in SPLITS for r in splits.get(name, ())}
    if len(where) != sum(len(splits.get(name, ())) for name in SPLITS):
        raise ValueError("near-duplicate removal needs unique sample ids")
    counts: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    for field in fields:
        texts = {r["id"]: r[field] for name in SPLITS for r in splits.get(name, ())}
        found = near_duplicate_pairs(
            texts, threshold=threshold, num_perm=num_perm, ngram=ngram, min_tokens=min_tokens, seed=seed
        )
        counts[f"near_duplicate_pairs_{field}"] = len(found)
        pairs.update(found)
    neighbours: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)

    leaked = {
        key for key, name in where.items()
        if name != "train" and any(where[n] == "train" for n in neighbours[key])
    }
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    moved: list[dict] = []
    tally: Counter = Counter()
    for name in SPLITS:
        for record in splits.get(name, ()):
            if record["id"] in leaked:
                tally[name] += 1
                if cross_split == "move":
                    moved.append(record)
                continue
            out[name].append(record)
    out["train"].extend(moved)
    verb = "moved" if cross_split == "move" else "dropped"
    for name in ("val", "test"):
        counts[f"near_duplicates_{name}_of_train"] = tally[name]
        counts[f"near_duplicates_{name}_{verb}"] = tally[name]

    if within_train:
        train_ids = [r["id"] for r in out["train"]]
        in_train = set(train_ids)
        groups = clusters(train_ids, [(a, b) for a, b in pairs if a in in_train and b in in_train])
        drop = {k for group in groups for k in group[1:]}
        out["train"] = [r for r in out["train"] if r["id"] not in drop]
        counts["near_duplicate_clusters_train"] = len(groups)
        counts["near_duplicates_train_dropped"] = len(drop)
    return out, counts
