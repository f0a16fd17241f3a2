"""`dvc repro` of the data stages in a temporary copy of the project, on a fixture repository."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import git
import pytest
import yaml

from conftest import ALL_STAGES, SPEED_KEYS, TINY_BUDGET, dvc, dvc_env, ran, set_params

from repotune import atomic

DATA_STAGES = ["clone", "extract", "filter", "judge", "split"]
MODEL_STAGES = ALL_STAGES[ALL_STAGES.index("train"):]


def test_dvc_repro_data_stages_is_reproducible_and_granular(project: Path):
    first = dvc(project, "repro", *DATA_STAGES)
    assert ran(first) == ["base", *DATA_STAGES]
    lock = (project / "dvc.lock").read_text()
    metrics = {p.name: p.read_bytes() for p in (project / "metrics").glob("*.json")}
    assert set(metrics) >= {"clone.json", "extract.json", "filter.json", "split.json"}

    second = dvc(project, "repro", *DATA_STAGES)
    assert ran(second) == []
    assert (project / "dvc.lock").read_text() == lock

    # A split parameter re-runs split only.
    set_params(project, split={"seed": 7})
    third = dvc(project, "repro", *DATA_STAGES)
    assert ran(third) == ["split"]

    # A filter parameter that changes nothing in the output stops the cascade after filter.
    set_params(project, **{"task.docstring.filter": {"drop_private": True}})
    fourth = dvc(project, "repro", *DATA_STAGES)
    assert "Running stage 'filter'" in fourth
    assert "Running stage 'split'" not in fourth

    # The per-stage counts are plain outputs: DVC's metrics are the headline and the training
    # summary only (neither exists yet), so `dvc exp show` is not a wall of counts.
    shown = json.loads(dvc(project, "metrics", "show", "--json"))
    assert set(shown.get("workspace", {}).get("data", {})) <= {"metrics/evaluate.json", "metrics/train.json"}


def test_judge_scores_once_and_its_threshold_reruns_split_only(project: Path):
    """The judge on the tiny model scores every sample once; a new threshold re-runs split
    alone (the judge stage does not declare it); a judge re-run finds every score in its cache."""
    # DVC wants every key the judge stage declares in params.yaml: change some, keep the rest.
    judge = {**yaml.safe_load((project / "params.yaml").read_text())["judge"],
             "enabled": True, "chat_template": False, "batch_size": 4, "threads": 1, "threshold": 1.0}
    set_params(project, judge=judge)
    first = dvc(project, "repro", *DATA_STAGES)
    assert ran(first) == ["base", *DATA_STAGES]
    kept = json.loads((project / "metrics/filter.json").read_text())["kept"]
    metrics = json.loads((project / "metrics/judge.json").read_text())
    assert (metrics["samples"], metrics["scored"], metrics["cached"]) == (kept, kept, 0)
    scores = atomic.read_jsonl(project / "data/judge/scores.jsonl")
    assert [r["id"] for r in scores] == sorted(r["id"] for r in atomic.read_jsonl(project / "data/filtered.jsonl"))
    assert all(1.0 <= r["score"] <= 5.0 and 0.0 < r["digit_mass"] <= 1.0 for r in scores)
    # Every score is >= 1: threshold 1.0 drops nothing.
    assert json.loads((project / "metrics/split.json").read_text())["dropped_judge_low"] == 0

    # A threshold between the scores: the samples under it leave the split, the judge stays.
    values = sorted(r["score"] for r in scores)
    threshold = values[len(values) // 2]
    below = sum(v < threshold for v in values)
    assert 0 < below < kept  # the tiny model's scores differ from sample to sample
    set_params(project, judge={**judge, "threshold": threshold})
    second = dvc(project, "repro", *DATA_STAGES)
    assert ran(second) == ["split"]
    split = json.loads((project / "metrics/split.json").read_text())
    assert (split["dropped_judge_low"], split["samples"]) == (below, kept - below)

    # A judge param that changes no score (batch size) re-runs the judge: nothing is re-scored.
    set_params(project, judge={**judge, "threshold": threshold, "batch_size": 3})
    third = dvc(project, "repro", *DATA_STAGES)
    assert ran(third) == ["judge"]  # same scores: split does not run
    metrics = json.loads((project / "metrics/judge.json").read_text())
    assert (metrics["scored"], metrics["cached"]) == (0, kept)




def test_model_stages_rerun_only_what_a_param_touches(project: Path, tiny_model: Path):
    set_params(project, **TINY_BUDGET)
    first = dvc(project, "repro")
    assert ran(first) == ALL_STAGES
    bench = json.loads((project / "metrics/evaluate.json").read_text())
    assert {"base_chrf", "finetuned_chrf", "delta_chrf", "delta_chrf_low", "delta_chrf_p"} <= set(bench)
    assert bench["task"] == "docstring"

    # Statistics and the report re-run evaluate alone; decoding both generations; a new adapter
    # the fine-tuned generation only (the base model's outputs stay).
    set_params(project, evaluate={"resamples": 300})
    assert ran(dvc(project, "repro")) == ["evaluate"]

    # distill declares decoding (the teacher decodes like every system); disabled, it re-runs
    # in well under a second and writes the same train file, so train does not run.
    set_params(project, decoding={"max_new_tokens": 6})
    assert ran(dvc(project, "repro")) == ["distill", *(s for s in ALL_STAGES if s.startswith("generate@")), "evaluate"]

    # train_rag declares lora too: without retrieval it re-writes its marker, and merge_rag stays.
    set_params(project, lora={"r": 8})
    assert ran(dvc(project, "repro")) == ["train", "merge", "train_rag", "generate@finetuned", "evaluate"]

    assert ran(dvc(project, "repro")) == []

    # A system is a params edit: a second system on the base model, listed in params.yaml alone
    # (dvc.yaml untouched), gets its own generate stage and a column in evaluate; nothing else runs.
    dvc_yaml = (project / "dvc.yaml").read_bytes()
    systems = yaml.safe_load((project / "params.yaml").read_text())["generate"]["systems"]
    set_params(project, generate={"systems": {**systems, "base_again": {"model": "models/base", "context": "none",
                                                                          "prompt": "trained"}}})
    assert ran(dvc(project, "repro")) == ["generate@base_again", "evaluate"]
    assert (project / "dvc.yaml").read_bytes() == dvc_yaml
    # The same model and prompt as base (greedy): the same outputs, so a tie for best_base (the
    # first listed, base, stays the reference) and a zero difference.
    generations = project / "data/generations"
    assert (generations / "base_again/test.plain.jsonl").read_bytes() == (generations / "base/test.plain.jsonl").read_bytes()
    again = json.loads((project / "metrics/evaluate.json").read_text())
    assert again["reference"] == "base" and again["base_again_chrf"] == again["base_chrf"]
    assert again["delta_base_again_chrf"] == 0 and again["delta_base_again_chrf_p"] == 1.0
    assert "base_chat_chrf" not in again  # the tiny model has no chat template: disabled, left out
    assert json.loads((project / "metrics/generate/base_again.json").read_text())["model"] == "models/base"
    report = (project / "metrics/report.md").read_text()
    assert report.startswith("# Evaluation, task `docstring`: base vs finetuned vs base_again\n")
    assert "Running stage" not in dvc(project, "repro")

    # And taking it out again re-runs evaluate alone.
    set_params(project, generate={"systems": systems})
    assert ran(dvc(project, "repro")) == ["evaluate"]
    assert "base_again_chrf" not in json.loads((project / "metrics/evaluate.json").read_text())


def test_one_switch_adds_the_retrieval_systems_and_reruns_only_what_sees_context(project: Path):
    set_params(project, **TINY_BUDGET)
    assert ran(dvc(project, "repro")) == ALL_STAGES
    # Retrieval off (the default): train_rag and merge_rag write markers, no model loaded; the
    # with_retrieval systems are not run and the report says so.
    assert atomic.read_json(project / "metrics/train_rag.json")["enabled"] is False
    assert atomic.disabled_reason(project / "models/merged_rag") is not None
    report = (project / "metrics/report.md").read_text()
    # (base_chat is not run either: the tiny model has no chat template.)
    assert "; base_prefix (enabled: with_retrieval, and retrieval.enabled is false); base_rag (" in report
    assert not {"base_rag_chrf", "finetuned_rag_chrf"} & set(atomic.read_json(project / "metrics/evaluate.json"))

    # One switch: the context, the adapter trained with it, the three systems; base and finetuned
    # (and their model stages) stay.
    set_params(project, retrieval={"enabled": True})
    assert ran(dvc(project, "repro")) == ["retrieve", "train_rag", "merge_rag", "generate@base_prefix",
                                          "generate@base_rag", "generate@finetuned_rag", "evaluate"]
    bench = atomic.read_json(project / "metrics/evaluate.json")
    assert {"base_rag_chrf", "finetuned_rag_chrf", "base_prefix_chrf", "delta_base_rag_chrf_low",
            "delta_finetuned_rag_chrf_p", "delta_chrf"} <= set(bench)
    training = atomic.read_json(project / "models/adapter_rag/training.json")
    assert training["context"] == "retrieval" and "samples_context_cut" in training["results"]
    assert (project / "models/merged_rag/config.json").is_file()
    rows = atomic.read_jsonl(project / "data/generations/base_rag/test.plain.jsonl")
    assert rows and all("context_cut" in r for r in rows)
    assert "context_cut" not in atomic.read_jsonl(project / "data/generations/base/test.plain.jsonl")[0]
    report = (project / "metrics/report.md").read_text()
    assert "| base_rag | `models/base` | retrieval: chunks of other files" in report
    # Only base_chat is left out now (the tiny model has no chat template).
    not_run = next(line for line in report.splitlines() if line.startswith("Not run: "))
    assert not_run.startswith("Not run: base_chat (") and "base_rag" not in not_run and "base_prefix" not in not_run
    # The pairs of evaluate.comparisons that ran, against each other.
    assert {"base_rag_vs_base_chrf", "base_rag_vs_base_prefix_chrf_low", "finetuned_rag_vs_finetuned_chrf_p"} <= set(
        atomic.read_json(project / "metrics/evaluate.json"))

    # A retrieval knob re-runs what sees the context, never the context-free systems.
    set_params(project, retrieval={"context_tokens": 5})
    rerun = ran(dvc(project, "repro"))
    assert "retrieve" in rerun and not {"train", "merge", "generate@base", "generate@finetuned"} & set(rerun)


# A value for each speed/bookkeeping key other than the default (0 = all cores; save_steps 30).
SPEED_VALUES = {"extract.workers": 1, "train.threads": 1, "train.save_steps": 7, "judge.threads": 1,
                "distill.threads": 1, "generate.threads": 1}


def test_a_speed_or_bookkeeping_setting_reruns_nothing(project: Path):
    """Each key of SPEED_KEYS, changed in params.yaml after a complete run: `dvc status` finds
    nothing to run (no stage declares it), and neither does `dvc repro`."""
    assert set(SPEED_VALUES) == set(SPEED_KEYS)
    set_params(project, **TINY_BUDGET)
    assert ran(dvc(project, "repro")) == ALL_STAGES
    assert json.loads(dvc(project, "status", "--json")) == {}
    for key, value in SPEED_VALUES.items():
        section, name = key.split(".")
        before = yaml.safe_load((project / "params.yaml").read_text())[section][name]
        assert before != value, key
        set_params(project, **{section: {name: value}})
        assert json.loads(dvc(project, "status", "--json")) == {}, key
    assert ran(dvc(project, "repro")) == []


def add_kotlin_and_java(project: Path) -> None:
    """Commit the Kotlin and Java fixture files into the project's source repository."""
    source = Path(yaml.safe_load((project / "params.yaml").read_text())["source"]["url"])
    fixtures = Path(__file__).parent / "fixtures"
    for rel in ("kotlin/Shapes.kt", "java/Cart.java"):
        dest = source / "android/src/main" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures / rel, dest)
    repo = git.Repo(source)
    repo.git.add("--all")
    repo.index.commit("android sources")


def test_new_tasks_on_kotlin_and_java_and_switching_task_reruns_from_extract(project: Path):
    add_kotlin_and_java(project)
    split = {"by": "sample", "train": 0.4, "val": 0.3, "test": 0.3}
    set_params(
        project, split=split, **TINY_BUDGET,
        task={"name": "method_name"},
        extract={"languages": ["kotlin", "java"]},
        **{"task.method_name.filter": {"min_body_lines": 1}},
    )
    assert ran(dvc(project, "repro")) == ALL_STAGES
    extracted = atomic.read_json(project / "metrics/extract.json")
    assert extracted["files_parsed_kotlin"] == 1 and extracted["files_parsed_java"] == 1
    bench = atomic.read_json(project / "metrics/evaluate.json")
    assert bench["task"] == "method_name"
    assert {"base_subtoken_f1", "finetuned_exact_match_ci", "delta_edit_similarity"} <= set(bench)
    assert "chrf" not in " ".join(bench)

    # Another task: everything from extract on re-runs (ood too: it mines the same task); base
    # and clone do not.
    set_params(project, task={"name": "completion"},
               **{"task.completion.extract": {"window": {"stride": 48, "prefix_tokens": 64}}})
    assert ran(dvc(project, "repro")) == ["extract", "filter", "judge", "split", "distill", "ood", "retrieve", *MODEL_STAGES]
    bench = atomic.read_json(project / "metrics/evaluate.json")
    assert bench["task"] == "completion"
    completion_metrics = ("exact_match", "edit_similarity", "bleu")
    # No chat baseline for completion (nor a chat template in the tiny model): base and fine-tuned.
    assert bench["reference"] == "base" and bench["trained_template_evaluated"] is True
    assert set(bench) == {"task", "template", "samples", "reference_markup_pct", "reference", "trained_template",
                          "trained_template_evaluated", "metric", "delta", "low", "high", "p"} | {
        f"{s}_{share}" for s in ("base", "finetuned") for share in ("degenerate_pct", "markup_pct", "wrong_kind_pct")
    } | {
        f"{s}_{m}" for s in ("base", "finetuned") for m in completion_metrics
    } | {f"delta_{m}{end}" for m in completion_metrics for end in ("", "_low", "_high", "_p")}
    for row in atomic.read_jsonl(project / "metrics/predictions.jsonl"):
        assert all("\n" not in text for text in row["outputs"].values())  # one line each


def test_comparing_runs_across_branches(project: Path):
    """The README's comparison workflow: a run on main, one with other params on a branch;
    `dvc params diff`, `dvc metrics diff` and `dvc exp show` show what changed."""
    set_params(project, **TINY_BUDGET)
    repo = git.Repo(project)
    dvc(project, "repro")
    on_main = atomic.read_json(project / "metrics/evaluate.json")
    repo.git.add("--all")
    repo.index.commit("run: default lora")
    repo.git.checkout("-b", "rank8")
    set_params(project, lora={"r": 8})
    assert ran(dvc(project, "repro")) == ["train", "merge", "train_rag", "generate@finetuned", "evaluate"]
    repo.git.add("--all")
    repo.index.commit("run: lora.r 8")

    params_diff = json.loads(dvc(project, "params", "diff", "main", "--json"))
    assert params_diff == {"params.yaml": {"lora.r": {"old": 16, "new": 8, "diff": -8}}}

    metrics_diff = json.loads(dvc(project, "metrics", "diff", "main", "--all", "--json",
                                  "--targets", "metrics/evaluate.json"))["metrics/evaluate.json"]
    # The base model's outputs are the same on both branches: its scores do not move.
    assert metrics_diff["base_chrf"]["diff"] == 0
    on_branch = atomic.read_json(project / "metrics/evaluate.json")
    for key in ("finetuned_chrf", "delta_chrf", "delta_chrf_low"):
        assert (metrics_diff[key]["old"], metrics_diff[key]["new"]) == (on_main[key], on_branch[key]), key
    assert {"delta_chrf", "delta_chrf_low", "delta_chrf_high", "delta_chrf_p", "samples"} <= set(metrics_diff)

    shown = json.loads(dvc(project, "exp", "show", "--all-branches", "--json"))
    by_rev = {}
    for entry in shown:
        data = entry.get("data") or {}
        by_rev[entry.get("name") or entry.get("rev")] = data
    assert {"main", "rank8"} <= set(by_rev)
    for name, r in (("main", 16), ("rank8", 8)):
        data = by_rev[name]
        assert data["params"]["params.yaml"]["data"]["lora"]["r"] == r
        assert "finetuned_chrf" in data["metrics"]["metrics/evaluate.json"]["data"]

    # What a person sees in an 80-column terminal (DVC's default pager, `less -S`): each run's
    # name, then the primary metric's delta and its CI bounds, read back against evaluate.json.
    screen = terminal_screen([sys.executable, "-m", "dvc", "--cd", str(project), "exp", "show", "--all-branches"], columns=80)
    header = next(line for line in screen if "Experiment" in line)
    assert header.split()[:6] == ["Experiment", "Created", "metric", "delta", "low", "high"], header
    for name, head in (("main", on_main), ("rank8", on_branch)):
        row = next(line for line in screen if line.split()[:1] == [name]).split()
        assert head["metric"] == "rouge_l" and "rouge_l" in row, row  # after the creation time
        at = row.index("rouge_l")
        shown = [float(cell) for cell in row[at + 1:at + 4]]
        assert shown == pytest.approx([head["delta"], head["low"], head["high"]], abs=0.01), (name, row)


def terminal_screen(command: list[str], columns: int, rows: int = 40, timeout: float = 120) -> list[str]:
    """The lines a terminal of `columns` x `rows` shows for `command` (escape codes removed),
    with the user's pager settings unset so that DVC runs its default, `less`; `q` quits it."""
    env = {key: value for key, value in dvc_env().items() if key not in ("PAGER", "DVC_PAGER", "LESS", "COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of that size, then the command
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.execvpe(command[0], command, env)
    seen, quit_sent, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if not quit_sent and b"(END)" in seen:  # the pager waits at the end of the table
            os.write(fd, b"q")
            quit_sent = True
    else:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)
    assert quit_sent, f"no pager prompt in:\n{seen.decode(errors='replace')}"
    text = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[=>])", "", seen.decode(errors="replace"))
    lines = [line.rstrip("\r") for line in text.split("\n")]
    assert all(len(line.rstrip(">")) <= columns for line in lines), "a line wider than the terminal"
    return lines



def test_a_run_pushed_to_a_remote_is_pulled_into_a_fresh_clone_up_to_date(project: Path, tmp_path: Path):
    """Artifacts survive the machine: push a finished run to a local-directory remote, clone the
    git repository afresh, `dvc pull`, and nothing needs to run again."""
    set_params(project, **TINY_BUDGET)
    dvc(project, "repro")
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "--default", "store", str(remote))
    repo = git.Repo(project)
    repo.git.add("--all")
    repo.index.commit("run, with its remote")
    dvc(project, "push")
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    git.Repo.clone_from(project, clone)
    assert not (clone / "models").exists() and not (clone / "data").exists()
    dvc(clone, "pull")
    for path in ("models/merged/model.safetensors", "data/split/test.jsonl", "data/generations/finetuned/test.plain.jsonl"):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert ran(dvc(clone, "repro")) == []


def test_distillation_through_dvc_repro_sequence_then_logits(project: Path, tmp_path: Path):
    """`distill.enabled` on the tiny models: a 3-layer teacher with the student's tokenizer
    writes targets for train inputs and for the fixture's undocumented definitions; train
    reads the mix, evaluate compares three systems. A new share re-runs distill (from its
    cache: nothing generated) and the model stages; logits mode trains with the KL term."""
    from conftest import build_tiny_model

    teacher = build_tiny_model(tmp_path / "teacher", hidden_size=64, layers=3, seed=1)
    # A file with no docstring at all: in no split, so its definitions are the teacher's to document.
    source = Path(yaml.safe_load((project / "params.yaml").read_text())["source"]["url"])
    (source / "pkg/plain.py").write_text(
        "def scale(values, factor):\n    return [v * factor for v in values]\n\n\n"
        "class Counter:\n    def bump(self, step):\n        self.total += step\n        return self.total\n"
    )
    repo = git.Repo(source)
    repo.git.add("--all")
    repo.index.commit("undocumented code")
    budget = {**TINY_BUDGET, "train": {**TINY_BUDGET["train"], "max_samples": 0},
              "decoding": {"max_new_tokens": 16, "batch_size": 2, "stop": []}}
    set_params(
        project, **budget,
        **{"task.docstring.filter": {"min_target_tokens": 1, "drop_placeholder_docs": False,
                                     "drop_name_only_docs": False, "drop_non_english_docs": False,
                                     "max_url_code_share": 1.0}},
        distill={"enabled": True, "teacher": {"base": str(teacher)}, "teacher_share": 0.5, "undocumented": True},
    )
    # The teacher is benchmarked as a system like any other: generate@teacher on the folder
    # distill materialises it into.
    systems = yaml.safe_load((project / "params.yaml").read_text())["generate"]["systems"]
    set_params(project, generate={**budget["generate"], "systems": {
        **systems, "teacher": {"model": "data/distill/model", "context": "none", "prompt": "trained"}}})
    assert ran(dvc(project, "repro")) == [*ALL_STAGES[:-1], "generate@teacher", "evaluate"]
    counts = atomic.read_json(project / "metrics/distill.json")
    train = atomic.read_jsonl(project / "data/distill/train.jsonl")
    gold = atomic.read_jsonl(project / "data/split/train.jsonl")
    teacher_rows = [r for r in train if r["id"].endswith(".teacher")]
    # scale, Counter, Counter.bump; geometry.py's no_docstring is left out (its file holds val/test samples).
    assert counts["undocumented_found"] == 3 and counts["undocumented_files_held_out"] >= 1
    assert counts["rows_teacher"] == len(teacher_rows) > 0
    assert len(train) - len(teacher_rows) == counts["rows_gold"] <= len(gold)
    assert any(r.get("undocumented") for r in atomic.read_jsonl(project / "data/distill/targets.jsonl"))
    assert atomic.read_json(project / "metrics/train.json")["train_samples"] == len(train)
    bench = atomic.read_json(project / "metrics/evaluate.json")
    assert {"teacher_chrf", "delta_teacher_chrf", "delta_chrf", "gain_kept_chrf"} <= set(bench)
    assert "## Teacher and student" in (project / "metrics/report.md").read_text()
    assert atomic.read_json(project / "metrics/generate/teacher.json")["parameters"] > \
        atomic.read_json(project / "metrics/generate/finetuned.json")["parameters"]

    set_params(project, distill={"teacher_share": 1.0})
    assert ran(dvc(project, "repro")) == ["distill", "train", "merge", "train_rag", "generate@finetuned", "evaluate"]
    assert atomic.read_json(project / "metrics/distill.json")["generated_now"] == 0

    set_params(project, distill={"mode": "logits", "kl_weight": 0.5})
    assert ran(dvc(project, "repro")) == ["distill", "train", "merge", "train_rag", "generate@finetuned", "evaluate"]
    info = atomic.read_json(project / "models/adapter/training.json")
    assert info["distill"]["mode"] == "logits" and info["distill"]["kl_weight"] == 0.5
    assert (project / "data/distill/train.jsonl").read_bytes() == (project / "data/split/train.jsonl").read_bytes()
