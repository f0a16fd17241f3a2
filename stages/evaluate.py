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
    from repotune.evaluation import details, headline, score_systems, split_by_context
    from repotune.tasks import resolved_decoding, task

    module = task(p.task.name)
    sets = evalsets.load_sets(args.test, args.ood, p.generate.max_samples, p.ood)
    templates = evalsets.templates(p.generate.templates, p.prompt.template)
    scored = score_systems(args.generations, p.generate.systems, sets, templates, module, p.evaluate)
    split = split_by_context(scored, args.retrieved)
    evaluations, metric = scored.evaluations, scored.params.primary

    out, signatures = args.out, metrics.signatures()
    summary = headline(p.task.name, evaluations, scored.params.reference, scored.finetuned, scored.teacher,
                       primary_metric=metric)
    summary.update(trained_template=p.prompt.template, trained_template_evaluated=p.prompt.template in templates)
    # Key order kept (not sorted): the primary metric's delta and interval first, then the rest
    # sorted (see evaluation.headline); the same bytes for the same numbers.
    atomic.write_text(out / "evaluate.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    atomic.write_json(out / "evaluate_details.json", {
        **details(p.task.name, evaluations, module.METRICS, scored.params, signatures),
        **({"by_target_in_context": split} if split else {}),
    })
    atomic.write_jsonl(out / "predictions.jsonl", [
        row for ev in evaluations for row in report.prediction_rows(ev, metric)
    ])
    report.write_plots(evaluations, module.METRICS, metric, scored.params.reference, p.evaluate.confidence,
                       out / "plots")
    atomic.write_text(out / "report.md", report.render_report(
        p.task.name, scored, module.METRICS,
        stage_metrics=report.read_stage_metrics(args.stage_metrics),
        settings={"languages": p.extract.languages, "trained with template": p.prompt.template,
                  "chat_template": p.prompt.chat_template,
                  "decoding": resolved_decoding(p.decoding, p.task.name).model_dump(mode="json")},
        signatures=signatures,
        costs=report.system_costs(list(scored.systems), args.stage_metrics / "generate", evaluations[0]),
        warnings=report.template_warnings(p.prompt.template, templates),
        wrong_kind_rule=module.WRONG_KIND, by_context=split,
        setup=report.Setup(
            base=p.model.label if p.model is not None else "models/base", lora_r=p.lora.r,
            lora_alpha=p.lora.alpha, lora_targets=p.lora.target_modules,
            lr=p.train.lr if p.train.lr is not None else module.TRAINING["lr"], finetuned=scored.finetuned,
        ),
    ))
    print(atomic.dumps(summary))


if __name__ == "__main__":
    sys.exit(errors.run(main))
