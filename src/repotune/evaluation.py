"""The numbers of one evaluation (an evaluation set with one prompt template): every system's
score on every metric of the task with its interval, each system's difference from the
reference system with its interval and p-value, and the share of degenerate outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, degenerate, evalsets, stats
from repotune.errors import RepotuneError
from repotune.metrics import METRICS
from repotune.params import BASE_MODEL, BEST_BASE, FINETUNED_MODEL, TEACHER_MODEL, EvaluateParams, SystemParams

if TYPE_CHECKING:
    from repotune.tasks import Task



def systems_on(systems: Mapping[str, SystemParams], model: str) -> list[str]:
    """The names of `systems` (``generate.systems``, in their order) that run the model folder
    `model` and see no context beyond the sample: the base at its prompts (``BASE_MODEL``), the
    fine-tuned model (``FINETUNED_MODEL``), the teacher (``TEACHER_MODEL``)."""
    return [name for name, system in systems.items() if system.model == model and system.context == "none"]


def evaluate(
    references: Sequence[str],
    inputs: Sequence[str],
    outputs: Mapping[str, Sequence[str]],
    metric_names: Sequence[str],
    sample_metric: str,
    params: EvaluateParams,
    wrong_kind: Mapping[str, Sequence[bool]] | None = None,
    pairs: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """Score every system of `outputs` against `references`.

    Args:
        references: the targets, one per sample.
        inputs: the input code of each sample (for the echo check).
        outputs: system name -> its outputs, same order; must hold ``params.reference``.
        metric_names: the task's metrics (keys of ``repotune.metrics.METRICS``).
        sample_metric: the metric scored per sample (examples and the difference histogram).
        params: the ``evaluate`` params (reference system, resamples, confidence, seed).
        wrong_kind: system -> per output, whether the task's rule calls it the wrong kind of
            output (see ``repotune.degenerate.summarise``); None = no rule.
        pairs: ``[system, against]`` pairs (both in `outputs`) also compared with each other.

    Returns:
        ``samples``; ``scores``: system -> metric -> ``{score, low, high}``; ``differences``:
        other system -> metric -> ``{delta, low, high, p, significant}``; ``degenerate``:
        system -> the shares of ``repotune.degenerate.summarise``; ``sample_scores``: system ->
        per-sample `sample_metric`; ``comparisons``: ``"<system> - <against>"`` (see
        :func:`comparison_name`) -> metric -> as in ``differences``, for each of `pairs`.
    """
    if params.reference not in outputs:
        raise ValueError(
            f"evaluate.reference is {params.reference!r} but the systems are {', '.join(outputs)}"
        )
    draws = {"resamples": params.resamples, "confidence": params.confidence, "seed": params.seed}
    scores: dict[str, dict[str, dict[str, float]]] = {name: {} for name in outputs}
    differences: dict[str, dict[str, dict[str, Any]]] = {
        name: {} for name in outputs if name != params.reference
    }
    missing = sorted({name for pair in pairs for name in pair} - set(outputs))
    if missing:
        raise ValueError(f"comparisons name systems without outputs: {', '.join(missing)}")
    comparisons: dict[str, dict[str, dict[str, Any]]] = {}
    for metric_name in metric_names:
        metric = METRICS[metric_name]
        rows = {name: metric.stats(texts, references) for name, texts in outputs.items()}
        for name, system_rows in rows.items():
            low, high = stats.score_interval(system_rows, metric.aggregate, **draws)
            scores[name][metric_name] = {
                "score": round(float(metric.aggregate(system_rows)), 4), "low": low, "high": high,
            }
        for name in differences:
            differences[name][metric_name] = _difference(rows[params.reference], rows[name], metric, params)
        for system, against in pairs:
            comparisons.setdefault(comparison_name(system, against), {})[metric_name] = _difference(
                rows[against], rows[system], metric, params)
    return {
        "samples": len(references),
        # The smallest two-sided p-value `resamples` permutations can give (none as extreme as
        # the observed difference): a p-value there means "at most this".
        "p_min": round(2 / (params.resamples + 1), 4),
        "scores": scores,
        "differences": differences,
        "comparisons": comparisons,
        "degenerate": {
            name: degenerate.summarise(texts, references, inputs, (wrong_kind or {}).get(name))
            for name, texts in outputs.items()
        },
        "sample_scores": {
            name: METRICS[sample_metric].sample_scores(texts, references) for name, texts in outputs.items()
        },
    }


def comparison_name(system: str, against: str) -> str:
    """The key of a comparison in a result's ``comparisons`` (and in the report)."""
    return f"{system} - {against}"


def _difference(against: Any, system: Any, metric: Any, params: EvaluateParams) -> dict[str, Any]:
    """``system − against`` on `metric` (per-sample statistics of each): delta, paired
    bootstrap interval, randomization p-value, significance at ``params.confidence``."""
    diff = stats.paired_difference(against, system, metric.aggregate, resamples=params.resamples,
                                   confidence=params.confidence, seed=params.seed)
    return {"delta": diff.delta, "low": diff.low, "high": diff.high, "p": diff.p_value,
            "significant": diff.significant(params.confidence)}


def by_target_in_context(
    evaluation: Mapping[str, Any], in_context: Mapping[str, bool], metric_name: str,
    reference: str, pairs: Sequence[Sequence[str]], params: EvaluateParams,
) -> dict[str, Any]:
    """`evaluation`'s scores on `metric_name` split by whether each sample's target stands
    verbatim in its retrieved context (`in_context`: sample id -> flag, from the retrieve
    stage), so a gain from copying is told apart from the rest. Per part (``in_context``,
    ``not_in_context``): ``samples``, ``scores`` (system -> score) and ``differences``
    (``"<system> - <against>"`` -> delta, interval, p) for every system against `reference`
    and for `pairs`; a part with no sample has ``samples`` 0 and nothing else."""
    metric = METRICS[metric_name]
    references = [r["target"] for r in evaluation["records"]]
    flags = [bool(in_context.get(r["id"], False)) for r in evaluation["records"]]
    systems = list(evaluation["outputs"])
    compared = [[name, reference] for name in systems if name != reference]
    compared += [list(pair) for pair in pairs if list(pair) not in compared]
    parts: dict[str, Any] = {}
    for part, wanted in (("in_context", True), ("not_in_context", False)):
        keep = [i for i, flag in enumerate(flags) if flag == wanted]
        if not keep:
            parts[part] = {"samples": 0}
            continue
        rows = {
            name: metric.stats([texts[i] for i in keep], [references[i] for i in keep])
            for name, texts in evaluation["outputs"].items()
        }
        parts[part] = {
            "samples": len(keep),
            "scores": {name: round(float(metric.aggregate(r)), 4) for name, r in rows.items()},
            "differences": {
                comparison_name(system, against): _difference(rows[against], rows[system], metric, params)
                for system, against in compared
            },
        }
    return {"metric": metric_name, **parts}


def gain_kept(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]], system: str, reference: str, metric: str,
    teacher: str | None,
) -> float | None:
    """The share of the `teacher` system's gain over `reference` that `system` has, in percent:
    100 = as good as the teacher, 0 = no better than the reference; None when the teacher gains
    nothing (or there is no teacher)."""
    if teacher is None or teacher not in scores or system not in scores:
        return None
    ref = scores[reference][metric]["score"]
    teacher_gain = scores[teacher][metric]["score"] - ref
    if abs(teacher_gain) < 1e-9:
        return None
    return round(100 * (scores[system][metric]["score"] - ref) / teacher_gain, 2)


def resolve_reference(
    reference: str, base_systems: Sequence[str], generations: Path, records: Sequence[Mapping[str, Any]],
    template: str, metric_name: str,
) -> tuple[str, dict[str, float]]:
    """`reference`, or for ``best_base`` the one of `base_systems` (those that run the base model
    with no context, see :func:`systems_on`) whose outputs on the test set with `template` score
    higher on `metric_name` (ties: the first listed), so that gains are measured over the base
    at its best prompt.

    Returns:
        The reference's name, and the score of each base system compared ({} when none was).
    """
    if reference != BEST_BASE:
        return reference, {}
    if not base_systems:
        raise RepotuneError(f"evaluate.reference is {BEST_BASE} but no system left runs the base model")
    if len(base_systems) == 1:
        return base_systems[0], {}
    metric = METRICS[metric_name]
    targets = [r["target"] for r in records]
    scores = {}
    for system in base_systems:
        rows = read_outputs(generations, system, "test", template, records)
        scores[system] = round(float(metric.aggregate(metric.stats([r["output"] for r in rows], targets))), 4)
    best = max(scores.values())
    return next(s for s in base_systems if scores[s] == best), scores


def read_outputs(
    generations: Path, system: str, set_name: str, template: str, records: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One system's generation rows for one evaluation, checked to be those of `records`.

    Raises:
        RepotuneError: the system has no outputs for it, or outputs of other samples.
    """
    path = evalsets.generation_file(generations / system, set_name, template)
    if not path.is_file():
        raise RepotuneError(f"{path}: no outputs of {system!r} (run its generate stage)")
    rows = atomic.read_jsonl(path)
    if [r["id"] for r in rows] != [r["id"] for r in records]:
        raise RepotuneError(f"{path}: its samples are not those of {set_name} (re-run generate)")
    return rows


def headline(
    task_name: str, evaluations: Sequence[Mapping[str, Any]], reference: str,
    primary: str | None = None, teacher: str | None = None, primary_metric: str | None = None,
) -> dict[str, Any]:
    """The flat headline of metrics/evaluate.json.

    First (see :func:`lead`), with a `primary_metric`: ``metric``, ``delta``,
    ``low``, ``high``, ``p``. Then, in key order, the test set with the first template: ``samples``, ``<system>_<metric>``, and per other
    system ``delta_<metric>`` with ``_low``, ``_high``, ``_p`` (the `primary` system's, or the
    only other one's; any other system's is ``delta_<system>_<metric>``...),
    ``<system>_degenerate_pct`` and ``<system>_markup_pct`` (with ``reference_markup_pct``);
    and for the out-of-domain set with the same template ``ood_samples`` and
    ``ood_delta_<metric>`` with ``_p``. With a `teacher` system, ``gain_kept_<metric>`` (the
    primary's; ``gain_kept_<system>_<metric>`` for the others): the share of the teacher's
    gain, in percent, see :func:`gain_kept`.
    """
    head = evaluations[0]
    flat: dict[str, Any] = {"task": task_name, "template": head["template"], "samples": head["result"]["samples"],
                            "reference": reference}
    others = list(head["result"]["differences"])

    # delta_<metric> is always the primary (fine-tuned) system's: stable keys for dvc metrics
    # diff across runs with and without a teacher or a chat baseline.
    def prefix(other: str) -> str:
        return "delta" if other == primary or len(others) == 1 else f"delta_{other}"

    for system, by_metric in head["result"]["scores"].items():
        for metric, s in by_metric.items():
            flat[f"{system}_{metric}"] = s["score"]
    for other, by_metric in head["result"]["differences"].items():
        for metric, d in by_metric.items():
            key = f"{prefix(other)}_{metric}"
            flat.update({key: d["delta"], f"{key}_low": d["low"], f"{key}_high": d["high"], f"{key}_p": d["p"]})
    for system in head["result"]["scores"]:
        if system in (teacher, reference) or teacher not in head["result"]["scores"]:
            continue
        for metric in head["result"]["scores"][system]:
            key = "gain_kept" if system == primary else f"gain_kept_{system}"
            flat[f"{key}_{metric}"] = gain_kept(head["result"]["scores"], system, reference, metric, teacher)
    for system, shares in head["result"]["degenerate"].items():
        flat[f"{system}_degenerate_pct"] = shares["degenerate_pct"]
        flat[f"{system}_wrong_kind_pct"] = shares["wrong_kind_pct"]
        flat[f"{system}_markup_pct"] = shares["markup_pct"]
    # The references are the same for every system: their share once.
    flat["reference_markup_pct"] = shares["reference_markup_pct"]
    # Each pair of evaluate.comparisons: <system>_vs_<against>_<metric> (+ _low, _high, _p).
    for name, by_metric in head["result"].get("comparisons", {}).items():
        key = name.replace(" - ", "_vs_")
        for metric, d in by_metric.items():
            flat.update({f"{key}_{metric}": d["delta"], f"{key}_{metric}_low": d["low"],
                         f"{key}_{metric}_high": d["high"], f"{key}_{metric}_p": d["p"]})
    ood = next((ev for ev in evaluations if ev["set"] == "ood" and ev["template"] == head["template"]), None)
    if ood is not None:
        for name, by_metric in ood["result"].get("comparisons", {}).items():
            for metric, d in by_metric.items():
                flat[f"ood_{name.replace(' - ', '_vs_')}_{metric}"] = d["delta"]
                flat[f"ood_{name.replace(' - ', '_vs_')}_{metric}_p"] = d["p"]
        flat["ood_samples"] = ood["result"]["samples"]
        for other, by_metric in ood["result"]["differences"].items():
            for metric, d in by_metric.items():
                flat[f"ood_{prefix(other)}_{metric}"] = d["delta"]
                flat[f"ood_{prefix(other)}_{metric}_p"] = d["p"]
    if primary_metric is None:
        return flat
    return {**lead(evaluations, primary_metric, reference, primary), **dict(sorted(flat.items()))}


def lead(
    evaluations: Sequence[Mapping[str, Any]], metric: str, reference: str, primary: str | None = None,
) -> dict[str, Any]:
    """The first keys of metrics/evaluate.json, short so that `dvc exp show` (whose first screen
    in an 80-column terminal holds the experiment's name and the first metrics) shows them:
    ``metric`` (its name), and the `primary` system's (or the only other one's) difference from
    `reference` on the headline evaluation, ``delta`` with its interval ``low``..``high`` and
    ``p``, rounded to 2 decimals (the full values are ``delta_<metric>``, ``_low``, ...)."""
    differences = evaluations[0]["result"]["differences"]
    if not differences:
        return {"metric": metric}
    d = differences[primary] if primary in differences else next(iter(differences.values()))
    d = d[metric]
    return {"metric": metric, "delta": round(d["delta"], 2), "low": round(d["low"], 2),
            "high": round(d["high"], 2), "p": d["p"]}


def compared_pairs(comparisons: Sequence[Sequence[str]], systems: Sequence[str]) -> list[list[str]]:
    """The pairs of ``evaluate.comparisons`` whose two systems both ran (are in `systems`)."""
    return [list(pair) for pair in comparisons if all(name in systems for name in pair)]


def evaluate_generations(
    generations: Path, systems: Sequence[str], sets: Mapping[str, Sequence[Mapping[str, Any]]],
    templates: Sequence[str], module: Task, params: EvaluateParams,
) -> list[dict[str, Any]]:
    """Every evaluation (set x template) of the outputs of `systems` under `generations`:
    ``{set, template, records, outputs, result}`` (see :func:`evaluate`), in the order of
    :func:`repotune.evalsets.evaluations`. `module` is the task's (its metrics).

    Raises:
        RepotuneError: a system has no outputs for an evaluation, or outputs of other samples.
    """
    evaluations = []
    for set_name, template in evalsets.evaluations(templates, "ood" in sets):
        records = sets[set_name]
        outputs, wrong_kind = {}, {}
        for system in systems:
            rows = read_outputs(generations, system, set_name, template, records)
            outputs[system] = [r["output"] for r in rows]
            wrong_kind[system] = [module.wrong_kind(r["output"], r.get("raw", r["output"])) for r in rows]
        result = evaluate(
            [r["target"] for r in records], [r["input"] for r in records], outputs,
            module.METRICS, params.primary or module.PRIMARY_METRIC, params, wrong_kind,
            pairs=compared_pairs(params.comparisons, systems),
        )
        evaluations.append({"set": set_name, "template": template, "records": records,
                            "outputs": outputs, "result": result})
    return evaluations


def details(
    task_name: str, evaluations: Sequence[Mapping[str, Any]], metric_names: Sequence[str],
    params: EvaluateParams, signatures: Mapping[str, str],
) -> dict[str, Any]:
    """metrics/evaluate_details.json: every evaluation in full (per-sample scores aside), the
    metrics' definitions and sacrebleu signatures."""
    return {
        "task": task_name, "reference": params.reference, "confidence": params.confidence,
        "resamples": params.resamples, "seed": params.seed,
        "evaluations": [
            {"set": ev["set"], "template": ev["template"],
             **{k: v for k, v in ev["result"].items() if k != "sample_scores"}}
            for ev in evaluations
        ],
        "definitions": {name: METRICS[name].definition for name in metric_names},
        "signatures": {name: sig for name, sig in signatures.items() if name in metric_names},
    }


@dataclass(frozen=True)
class Scored:
    """What the evaluate stage scored (see :func:`score_systems`)."""

    systems: dict[str, SystemParams]  # those of generate.systems that ran, in their order
    not_run: dict[str, str | None]  # the others, with the reason their generate stage gave
    evaluations: list[dict[str, Any]]  # see evaluate_generations
    params: EvaluateParams  # with its reference and primary metric resolved
    base_scores: dict[str, float]  # see resolve_reference
    finetuned: str | None  # the system of models/merged (its delta_<metric> keys are unprefixed)
    teacher: str | None  # the system of the distillation teacher


def score_systems(
    generations: Path, systems: Mapping[str, SystemParams], sets: Mapping[str, Sequence[Mapping[str, Any]]],
    templates: Sequence[str], module: Task, params: EvaluateParams,
) -> Scored:
    """Every evaluation of the `systems` (``generate.systems``) whose generate stage ran, against
    ``evaluate.reference`` (``best_base``: the base at its best prompt on the test set with the
    first template, by the primary metric).

    Raises:
        RepotuneError: the reference is not one of the systems that ran, or outputs are missing.
    """
    enabled = {name: s for name, s in systems.items() if evalsets.system_enabled(generations / name)}
    metric = params.primary or module.PRIMARY_METRIC
    reference, base_scores = resolve_reference(
        params.reference, systems_on(enabled, BASE_MODEL), generations, sets["test"], templates[0], metric,
    )
    if reference not in enabled:
        raise RepotuneError(f"evaluate.reference is {params.reference!r}, not one of the systems {', '.join(enabled)}")
    resolved = params.model_copy(update={"reference": reference, "primary": metric})
    return Scored(
        systems=enabled,
        not_run={name: evalsets.disabled_system(generations / name) for name in systems if name not in enabled},
        evaluations=evaluate_generations(generations, list(enabled), sets, templates, module, resolved),
        params=resolved, base_scores=base_scores,
        finetuned=next(iter(systems_on(enabled, FINETUNED_MODEL)), None),
        teacher=next(iter(systems_on(enabled, TEACHER_MODEL)), None),
    )


def split_by_context(scored: Scored, retrieved: Path) -> dict[str, Any] | None:
    """With a system that sees retrieved context: the headline evaluation's scores split by
    whether the target stands verbatim in the retrieved context (`retrieved`: the retrieve
    stage's test rows with their ``target_in_context``), i.e. a gain from copying or the rest;
    None without such a system or file."""
    if not (any(s.context != "none" for s in scored.systems.values()) and retrieved.is_file()):
        return None
    in_context = {row["id"]: row["target_in_context"] for row in atomic.iter_jsonl(retrieved)}
    if not in_context:
        return None
    pairs = compared_pairs(scored.params.comparisons, list(scored.systems))
    return by_target_in_context(
        scored.evaluations[0], in_context, scored.params.primary, scored.params.reference, pairs, scored.params,
    )
