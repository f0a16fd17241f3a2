"""The data half of the pipeline (clone -> extract -> filter -> judge -> split) on a large local corpus.

A git repository is built from `--source` (default: the site-packages of the running Python,
~15,000 .py files in this project's venv): for each size N, N .py files taken evenly over the
sorted list of all of them (a deterministic subset that spans every package), copied with their
relative paths and committed with gitpython. Each stage then runs as `python stages/<stage>.py`
in a work folder whose params.yaml is `--params` with `source.url` pointing at that repository
and `extract.workers` set, once per number of workers.

Per stage it reports wall seconds, files/s (files in the repository) and samples/s (samples the
stage read or wrote), and peak memory: the largest resident set of the stage's process tree
(one process; the extract workers are forked from the stage, so their shared pages are not
counted twice).

    python bench/data_scale.py [--source DIR] [--sizes 2500 5000 10000] [--workers 1 2]
        [--params params.yaml] [--base models/base] [--out bench/results/data_scale.json]

Wall times include anything else running on the machine: the load average is recorded before
and after every run; compare runs only when those agree.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import git
import yaml
from flops import write_result  # bench/flops.py

from repotune import atomic

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("clone", "extract", "filter", "judge", "split")  # judge: disabled by default, writes no score


def python_files(source: Path) -> list[str]:
    """Relative POSIX paths of the regular .py files under `source`, sorted."""
    return sorted(
        p.relative_to(source).as_posix()
        for p in source.rglob("*.py")
        if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts
    )


def evenly(paths: list[str], n: int) -> list[str]:
    """`n` of `paths` spread evenly over the list (all of them when n >= len)."""
    if n >= len(paths):
        return list(paths)
    return [paths[i * len(paths) // n] for i in range(n)]


def build_repo(source: Path, files: list[str], folder: Path) -> str:
    """Copy `files` from `source` into a new git repository at `folder`; return the commit sha."""
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, folder / rel)
    repo = git.Repo.init(folder, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "bench")
        cw.set_value("user", "email", "bench@example.com")
    repo.git.add("--all")
    return repo.index.commit(f"{len(files)} files").hexsha


def run_stage(name: str, workdir: Path, base: Path | None) -> tuple[float, float]:
    """Run stages/<name>.py in `workdir`; return (wall seconds, peak RSS in MiB of its tree)."""
    argv = [sys.executable, str(ROOT / "stages" / f"{name}.py")]
    if name == "extract" and base is not None:
        argv += ["--base", str(base)]
    # Through GNU time, not os.wait4 here: a process started from this one starts its peak RSS
    # at this (large) process's, while time's child starts from time's few MiB. %M is the
    # largest single process of the tree, in KiB (the extract workers are forked and share
    # pages with the stage, so a sum would count them twice).
    with tempfile.TemporaryDirectory() as tmp:
        peak_file, err_file = Path(tmp) / "peak", Path(tmp) / "err"
        start = time.perf_counter()
        with err_file.open("w") as err:
            done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *argv],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{name} failed in {workdir}:\n{err_file.read_text()[-2000:]}")
        return seconds, int(peak_file.read_text().split()[-1]) / 1024


def stage_samples(name: str, workdir: Path) -> int:
    """Samples the stage handled: written by extract, read by filter and split."""
    if name == "extract":
        return atomic.read_json(workdir / "metrics/extract.json")["samples"]
    if name == "filter":
        return atomic.read_json(workdir / "metrics/filter.json")["seen"]
    if name == "split":
        return atomic.read_json(workdir / "metrics/split.json")["samples"]
    return 0


def run_data_half(repo: Path, workers: int, params_path: Path, base: Path | None, workdir: Path) -> dict:
    """clone -> extract -> filter -> judge -> split of `repo` in a fresh `workdir`, timed per stage."""
    raw = yaml.safe_load(params_path.read_text())
    raw["source"].update(url=str(repo), rev="main")
    raw["extract"]["workers"] = workers
    workdir.mkdir(parents=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    result: dict = {"workers": workers, "load_before": [round(x, 2) for x in os.getloadavg()], "stages": {}}
    for name in STAGES:
        seconds, peak = run_stage(name, workdir, base)
        files = atomic.read_json(workdir / "metrics/clone.json")["files"]
        samples = stage_samples(name, workdir)
        result["stages"][name] = {
            "seconds": round(seconds, 2),
            "files_per_s": round(files / seconds, 1),
            "samples": samples,
            "samples_per_s": round(samples / seconds, 1),
            "peak_rss_mib": round(peak, 1),
        }
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(sum(s["seconds"] for s in result["stages"].values()), 2)
    result["peak_rss_mib"] = max(s["peak_rss_mib"] for s in result["stages"].values())
    extract = atomic.read_json(workdir / "metrics/extract.json")
    result["files_parsed"] = extract["files_parsed"]
    result["extracted_sha256"] = _sha256(workdir / "data/extracted.jsonl")
    return result


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def table(runs: list[dict]) -> str:
    """A markdown table: one row per (files, workers), seconds and peak MiB per stage."""
    head = "| files | workers | " + " | ".join(f"{s} s (MiB)" for s in STAGES) + " | data half s | files/s | samples/s (extract) | peak MiB | load 1 min |"
    lines = [head, "|" + "---|" * (len(STAGES) + 7)]
    for r in runs:
        cells = " | ".join(f"{r['stages'][s]['seconds']:.1f} ({r['stages'][s]['peak_rss_mib']:.0f})" for s in STAGES)
        lines.append(
            f"| {r['files']} | {r['workers']} | {cells} | {r['seconds']:.1f} | {r['files'] / r['seconds']:.0f} | "
            f"{r['stages']['extract']['samples_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['load_before'][0]:.1f}-{r['load_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--base", type=Path, default=None, help="model folder (tasks that need its tokenizer)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    all_files = python_files(args.source)
    runs = []
    with tempfile.TemporaryDirectory(prefix="data_scale.") as tmp:
        for size in args.sizes:
            files = evenly(all_files, size)
            repo = Path(tmp) / f"repo{size}"
            build_repo(args.source, files, repo)
            for workers in args.workers:
                run = run_data_half(repo, workers, args.params, args.base, Path(tmp) / f"work{size}_{workers}")
                runs.append({"files": len(files), **run})
                print(f"{len(files)} files, {workers} workers: {run['seconds']} s, peak {run['peak_rss_mib']} MiB",
                      file=sys.stderr)
    result = {
        "source": str(args.source),
        "source_py_files": len(all_files),
        "cpus": os.cpu_count(),
        "self_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs": runs,
        "table": table(runs),
    }
    write_result(result, args.out)
    print(result["table"])
    return result


if __name__ == "__main__":
    main()
