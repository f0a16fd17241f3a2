"""Stage `evaluate`: score every system's outputs, with intervals, p-values, degenerate-output
checks, a report and plots. Cheap: no model is loaded, so a change of metric, resamples,
report or plot re-runs this stage only, in seconds.

Reads:  data/generations/<system>/ of every system of params.yaml `generate.systems` (a
        folder whose system.json says ``enabled: false`` is left out: base_chat without a chat
        template), metrics/generate/<system>.json (speed and parameters, for the
        teacher/student cost table), data/split/test.jsonl, data/ood.jsonl,
        metrics/{clone,extract,filter,split,train,ood}.json (the data and training summary),
        data/retrieved/retrieval/test.jsonl (whether each target stands in its context),
        params.yaml `task`, `generate` (systems: their names, models, contexts, prompts; sample
        cap, templates), `ood.max_samples` (null `ood` = no out-of-domain set), `evaluate` (reference system, primary metric, resamples, confidence, seed,
        examples), `prompt` and `decoding` (stated in the report), `model.base`,
        `lora.r/alpha/target_modules` and `train.lr` (named in the report's first lines)
Writes: metrics/evaluate.json: the headline: first the primary metric (`metric`) and the
        fine-tuned system's difference on it (`delta`, `low`, `high`, `p`), short for
        `dvc exp show`; then the test set with the first template, every
        system's score, each difference from the reference with its interval and p-value, n,
        the share of degenerate outputs, and the out-of-domain differences (``delta_<metric>``
        is the first system on models/merged's, or the only other system's);
        metrics/evaluate_details.json: every evaluation (set x template) in full, metric
        definitions and sacrebleu signatures; with a system that sees retrieved context,
        ``by_target_in_context``: the test scores split by whether the target stands verbatim
        in the retrieved context (data/retrieved/retrieval/test.jsonl), every difference again;
        metrics/predictions.jsonl: per sample and evaluation, every system's output and score;
        metrics/report.md and metrics/plots/{scores,sample_deltas}.png (rendered offline).
Run:    python stages/evaluate.py [--out metrics]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, evalsets, params


# long: the stage's recipe in the order its docstring lists (load, score, compare, report, write);
# loops and scoring live in the library. Splitting it would hide that order, not shorten a job.
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--generations", type=Path, default=Path("data/generations"))
    parser.add_argument("--test", type=Path, default=Path("data/split/test.jsonl"))
    parser.add_argument("--ood", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--retrieved", type=Path, default=Path("data/retrieved/retrieval/test.jsonl"),
                        help="the test samples' retrieved context (its target_in_context flags)")
    parser.add_argument("--stage-metrics", type=Path, default=Path("metrics"), help="where clone.json... are")
    parser.add_argument("--out", type=Path, default=Path("metrics"), help="folder for the outputs listed above")
    args = parser.parse_args(argv)
    p = params.load(args.params)

    from repotune import metrics, report
    from repotune.evaluation import (
        by_target_in_context, compared_pairs, details, evaluate_generations, headline, resolve_reference, systems_on,
    )
    from repotune.tasks import resolved_decoding, task

    module = task(p.task.name)
    metric = p.evaluate.primary or module.PRIMARY_METRIC  # a name of module.METRICS: params.load checks it
    listed = p.generate.systems
    enabled = {name: s for name, s in listed.items() if evalsets.system_enabled(args.generations / name)}
    systems = list(enabled)
    # The roles a system plays here follow from its model: the unprefixed delta_<metric> keys are
    # the fine-tuned model's, the teacher's gain is what the others are measured against.
    primary = next(iter(systems_on(enabled, params.FINETUNED_MODEL)), None)
    teacher = next(iter(systems_on(enabled, params.TEACHER_MODEL)), None)
    sets = evalsets.load_sets(args.test, args.ood, p.generate.max_samples, p.ood)
    templates = evalsets.templates(p.generate.templates, p.prompt.template)
    # best_base: the base system at its best prompt, by the primary metric on the headline.
    reference, base_scores = resolve_reference(
        p.evaluate.reference, systems_on(enabled, params.BASE_MODEL), args.generations, sets["test"],
        templates[0], metric,
    )
    if reference not in systems:
        raise errors.RepotuneError(
            f"evaluate.reference is {p.evaluate.reference!r}, not one of the systems {', '.join(systems)}"
        )
    evaluate_params = p.evaluate.model_copy(update={"reference": reference, "primary": metric})
    evaluations = evaluate_generations(args.generations, systems, sets, templates, module, evaluate_params)
    warnings = []
    if p.prompt.template not in templates:
        warnings.append(
            f"the adapter was trained with template `{p.prompt.template}` (prompt.template), which "
            f"generate.templates ({', '.join(templates)}) leaves out: every score here is of a prompt "
            "it never saw in training"
        )

    # With a system that sees retrieved context: the headline's scores split by whether the
    # target stands verbatim in the retrieved context (a gain from copying, or the rest).
    in_context = {row["id"]: row["target_in_context"] for row in atomic.iter_jsonl(args.retrieved)} if (
        any(s.context != "none" for s in enabled.values()) and args.retrieved.is_file()
    ) else {}
    split = by_target_in_context(
        evaluations[0], in_context, metric, reference, compared_pairs(p.evaluate.comparisons, systems), evaluate_params,
    ) if in_context else None

    out = args.out
    stage_metrics = report.read_stage_metrics(args.stage_metrics)
    costs = report.system_costs(systems, args.stage_metrics / "generate", evaluations[0])
    signatures = metrics.signatures()
    summary = headline(p.task.name, evaluations, reference, primary, teacher, primary_metric=metric)
    summary.update(trained_template=p.prompt.template, trained_template_evaluated=p.prompt.template in templates)
    # Key order kept (not sorted): the primary metric's delta and interval first, then the rest
    # sorted (see evaluation.headline); the same bytes for the same numbers.
    atomic.write_text(out / "evaluate.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    atomic.write_json(out / "evaluate_details.json", {
        **details(p.task.name, evaluations, module.METRICS, evaluate_params, signatures),
        **({"by_target_in_context": split} if split else {}),
    })
    atomic.write_jsonl(out / "predictions.jsonl", [
        row for ev in evaluations for row in report.prediction_rows(ev, metric)
    ])
    report.write_plots(evaluations, module.METRICS, metric, reference, p.evaluate.confidence, out / "plots")
    settings = {
        "languages": p.extract.languages, "trained with template": p.prompt.template,
        "chat_template": p.prompt.chat_template, "decoding": resolved_decoding(p.decoding, p.task.name).model_dump(mode="json"),
    }
    atomic.write_text(out / "report.md", report.render_report(
        p.task.name, evaluations, module.METRICS, metric,
        reference=reference, confidence=p.evaluate.confidence,
        resamples=p.evaluate.resamples, examples=p.evaluate.examples,
        stage_metrics=stage_metrics, settings=settings, signatures=signatures, costs=costs, warnings=warnings,
        wrong_kind_rule=module.WRONG_KIND, base_scores=base_scores,
        prompts={name: s.prompt for name, s in enabled.items()}, teacher=teacher,
        systems={name: {"model": s.model, "context": s.context} for name, s in enabled.items()},
        by_context=split,
        not_run={name: evalsets.disabled_system(args.generations / name) for name in listed if name not in enabled},
        setup=report.Setup(
            base=p.model.label if p.model is not None else "models/base", lora_r=p.lora.r,
            lora_alpha=p.lora.alpha, lora_targets=p.lora.target_modules,
            lr=p.train.lr if p.train.lr is not None else module.TRAINING["lr"],
            finetuned=primary,
        ),
    ))
    print(atomic.dumps(summary))


if __name__ == "__main__":
    sys.exit(errors.run(main))
