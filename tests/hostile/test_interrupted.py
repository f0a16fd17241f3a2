"""SIGKILL in the middle of every stage, at several points: no output path ever holds a partial
file, nothing is left behind, and `dvc repro` afterwards completes with the same bytes as a run
that was never interrupted (issue 11).

A kill lands at a fraction of each stage's duration in the uninterrupted run (its imports, its
work or its writes, depending on the stage); the same project is then resumed with `dvc repro`,
which skips the stages already done, until the next stage's turn. Timings are not asserted.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import (
    ALL_STAGES,
    TINY_BUDGET,
    dvc,
    dvc_env,
    kill_at_checkpoint,
    make_source_repo,
    project_copy,
    set_params,
)

# Where in each stage (as a share of its uninterrupted duration) a run is killed.
KILL_AT = (0.35, 0.8)
# Outputs compared byte for byte with the uninterrupted run; the rest (metrics with timings,
# report) must only be whole: valid JSON, or not there.
EXACT = ("data", "models", "dvclive")
TEMP_MARKERS = (".partial-", ".scratch-")
# A killed train stage leaves its run's checkpoints (models/checkpoints/<run key>/, with the
# Trainer's model card beside them) on purpose: the next `dvc repro` resumes from them and a
# finished run removes them, which the final comparison with the uninterrupted run checks.
RESUME_STATE = re.compile(r"^models/checkpoints[^/]*/[0-9a-f]{16}/")


def make_project(root: Path, source: Path, tiny_model: Path) -> Path:
    project = root / "project"
    repo = project_copy(project)
    for committed in ("metrics", "dvclive"):  # the real run's outputs: this run writes its own
        repo.git.rm("-r", "-q", "--cached", "--ignore-unmatch", committed)
        subprocess.run(["rm", "-rf", str(project / committed)], check=True)
    set_params(
        project,
        source={"url": str(source), "rev": "main"},  # the same path: records name it
        **{"task.docstring.filter": {"min_target_tokens": 10}},
        model={"base": str(tiny_model), "file": None, "sha256": None},
        split={"by": "sample", "train": 0.4, "val": 0.3, "test": 0.3, "min_test_samples": 0},
        **TINY_BUDGET,
    )
    repo.git.add("--all")
    repo.index.commit("project")
    return project


def repro(project: Path, target: str | None = None, kill: float | None = None) -> tuple[dict[str, float], bool]:
    """`dvc repro [target]`; with `kill` (seconds), SIGKILL the target stage's processes that long
    after it starts. Returns the stages' start times (seconds from launch) and whether it was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", *([target] if target else [])], cwd=project, env={**dvc_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    launched, started, lines = time.monotonic(), {}, []
    killed = threading.Event()

    def killer(delay: float) -> None:
        # The stage's processes (shell, python, its git/pip children), not DVC itself: DVC
        # writes its own .dvc/tmp/rwlock in place, and a SIGKILL there corrupts it (DVC's
        # problem, see docs/guarantees.md).
        time.sleep(delay)
        try:
            stage_processes = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:  # DVC already finished
            return
        if stage_processes and proc.poll() is None:
            killed.set()
            for child in stage_processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGKILL)

    for line in proc.stdout:
        lines.append(line)
        for stage in ALL_STAGES:
            if f"Running stage '{stage}'" in line:
                started[stage] = time.monotonic() - launched
                if kill is not None and stage == target:
                    threading.Thread(target=killer, args=(kill,), daemon=True).start()
    code = proc.wait()
    if not killed.is_set():
        assert code == 0, "".join(lines)
    return started, killed.is_set()


def is_temp(rel: str) -> bool:
    """A temporary or scratch folder beside an output (removed by that output's next write)."""
    return any(part.startswith(".") and any(m in part for m in TEMP_MARKERS) for part in rel.split("/"))


def files(project: Path, top: str) -> dict[str, bytes]:
    """The files under `top` at output paths (temporary folders left by a kill aside)."""
    found = ((p, p.relative_to(project).as_posix()) for p in sorted((project / top).rglob("*")) if p.is_file())
    return {rel: p.read_bytes() for p, rel in found if not is_temp(rel)}


def leftovers(project: Path) -> list[str]:
    return sorted(p.relative_to(project).as_posix() for p in project.rglob(".*") if any(m in p.name for m in TEMP_MARKERS))


def system_temp() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("repotune-*")}


def check_whole(project: Path, reference: dict[str, bytes]) -> None:
    """Every output there is whole: the reference's bytes (data, models, curves) or valid JSON."""
    for top in EXACT:
        for rel, data in files(project, top).items():
            if RESUME_STATE.match(rel):
                continue
            assert rel in reference, f"{rel}: not an output of the uninterrupted run"
            assert data == reference[rel], f"{rel}: differs from the uninterrupted run"
    for path in (project / "metrics").rglob("*.json"):
        if not is_temp(path.relative_to(project).as_posix()):
            json.loads(path.read_text())  # a partial file would not parse


@pytest.mark.slow
def test_sigkill_anywhere_leaves_nothing_partial_and_resumes_to_the_same_bytes(tmp_path: Path, tiny_model: Path):
    temp_before = system_temp()
    source = Path(make_source_repo(tmp_path / "source").working_dir)
    reference_project = make_project(tmp_path / "reference", source, tiny_model)
    started, _ = repro(reference_project)
    order = list(started)  # DVC's order
    assert sorted(order) == sorted(ALL_STAGES)
    ends = [*(started[s] for s in order[1:]), None]
    durations = {s: (end or started[s] + 10.0) - started[s] for s, end in zip(order, ends, strict=True)}
    reference = {rel: data for top in EXACT for rel, data in files(reference_project, top).items()}

    project = make_project(tmp_path / "interrupted", source, tiny_model)
    killed = []
    for stage in order:
        for share in KILL_AT:
            # `dvc repro STAGE`: the stages before it are done; a kill that comes too late
            # lets this stage finish, never the ones after it.
            _, was_killed = repro(project, stage, kill=share * durations[stage])
            killed += [stage] if was_killed else []
            check_whole(project, reference)
    # Stages that only write a marker (retrieval off, no chat template, no teacher) are over
    # in a blink, and on a loaded machine DVC's own work between stages is most of their
    # duration, so a kill point there may land after the stage's process is gone. The stages
    # that load a model and write large outputs must each have been killed at least once.
    assert {"train", "merge", "generate@base", "generate@finetuned"} <= set(killed), killed
    assert len(killed) >= len(ALL_STAGES) // 2, killed

    repro(project)
    check_whole(project, reference)
    assert {rel for top in EXACT for rel in files(project, top)} == set(reference)
    assert "Data and pipelines are up to date" in dvc(project, "status")
    assert leftovers(project) == []
    assert system_temp() == temp_before


@pytest.mark.slow
def test_dvc_repro_after_a_killed_train_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_model: Path):
    source = Path(make_source_repo(tmp_path / "source").working_dir)
    long_train = {**TINY_BUDGET["train"], "max_steps": 60, "save_steps": 5, "eval_steps": 20}
    projects = []
    for name in ("reference", "killed"):
        project = make_project(tmp_path / name, source, tiny_model)
        set_params(project, train=long_train)
        projects.append(project)
    reference, killed = projects
    dvc(reference, "repro", "train")

    argv = [sys.executable, "-m", "dvc", "repro", "train"]
    killed_at = kill_at_checkpoint(argv, killed / "models/checkpoints", 20, cwd=killed, env=dvc_env(), spare_launcher=True)
    assert not (killed / "models/adapter").exists()
    out = dvc(killed, "repro")
    assert f"checkpoint-{killed_at} (same params and inputs)" in out
    assert json.loads((killed / "metrics/train.json").read_text())["resumed_from_step"] == killed_at
    assert files(killed, "models/adapter") == {
        rel: data for rel, data in files(reference, "models/adapter").items()
    }
    assert files(killed, "dvclive/train") == files(reference, "dvclive/train")
    assert [p.name for p in (killed / "models/checkpoints").iterdir()] == ["README.md"]
    assert "Data and pipelines are up to date" in dvc(killed, "status")
