"""Running the train stage as several processes (data parallel) under ``accelerate launch``.

dvc.yaml's command stays ``python stages/train.py``. With ``train.launcher: accelerate`` that
first process is only a launcher: it checks the accelerate config here (a missing file, a
DeepSpeed config without deepspeed, a GPU config without enough GPUs fail at once, in one line,
instead of after minutes of loading in every worker), then re-runs the same script with the same
arguments through accelerate's launcher and exits with its status. The workers it starts carry
``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (set by torchrun, which accelerate runs), which is how a
worker knows it must not launch again.

Nothing here imports torch or accelerate at module level: the data stages import nothing of it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from repotune.errors import RepotuneError

# Set by torchrun (and so by accelerate launch) in every worker it starts.
WORKER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
KEY = "train.accelerate_config"


def is_worker() -> bool:
    """True in a process a distributed launcher started (it must train, not launch again)."""
    return any(name in os.environ for name in WORKER_ENV)


def is_main_process() -> bool:
    """True in the process that writes shared outputs: global rank 0, or the only process.

    Read from the environment because the stage needs it before any process group exists
    (preparing the checkpoint folder comes before the Trainer)."""
    return int(os.environ.get("RANK", "0")) == 0


def importable(name: str) -> bool:
    """Whether `name` could be imported, without importing it (deepspeed's import takes seconds).

    A ``None`` entry in ``sys.modules`` means "not importable", as for ``import`` itself."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def read_config(path: Path) -> dict[str, Any]:
    """The accelerate config at `path` (YAML mapping), or a one-line error naming the param.

    Raises:
        RepotuneError: the file is missing, is not YAML, or is not a mapping.
    """
    if not path.is_file():
        shipped = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        hint = f" (in {path.parent}: {', '.join(shipped)})" if shipped else ""
        raise RepotuneError(f"params.yaml: {KEY} {path}: file not found{hint}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RepotuneError(f"params.yaml: {KEY} {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict):
        raise RepotuneError(f"params.yaml: {KEY} {path}: not an accelerate config (a YAML mapping)")
    return config


def processes_per_machine(config: dict[str, Any]) -> int:
    """Processes accelerate starts on this machine: ``num_processes`` counts all machines."""
    machines = max(int(config.get("num_machines", 1) or 1), 1)
    return max(int(config.get("num_processes", 1) or 1) // machines, 1)


def cuda_devices() -> int:
    """CUDA GPUs this process sees (0 on the CPU build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_config(path: str | Path, device: str) -> Path:
    """Check, before launching, that the accelerate config at `path` can run here; return it
    as an absolute path (the workers may start elsewhere).

    `device` is ``train.device``: a CPU config (``use_cpu: true``) needs ``cpu`` (``auto`` would
    put the workers on a GPU when one is visible, against the config), a GPU config needs it not
    to be ``cpu``.

    Raises:
        RepotuneError: one line naming ``train.accelerate_config`` (or ``train.device``) and
            what to change: missing file, DeepSpeed without deepspeed, a ``MULTI_CPU`` config
            that accelerate would run as one process, fewer visible GPUs than processes.
    """
    path = Path(path).resolve()
    config = read_config(path)
    kind = str(config.get("distributed_type", "NO")).upper()
    on_cpu = bool(config.get("use_cpu", False))
    per_machine = processes_per_machine(config)
    if kind == "DEEPSPEED" and not importable("deepspeed"):
        raise RepotuneError(
            f"params.yaml: {KEY} {path.name} uses DeepSpeed, which is not installed "
            "(pip install deepspeed, on a CUDA machine), or choose another config"
        )
    if kind == "MULTI_CPU" and per_machine > 1 and not config.get("mpirun_hostfile"):
        # accelerate's simple launcher starts ONE process for MULTI_CPU unless mpirun does it:
        # the run would silently train alone. torchrun (distributed_type MULTI_GPU) starts them.
        raise RepotuneError(
            f"params.yaml: {KEY} {path.name}: MULTI_CPU without mpirun_hostfile runs one process, "
            "not num_processes; use distributed_type: MULTI_GPU with use_cpu: true (as cpu-2proc.yaml)"
        )
    if on_cpu and device != "cpu":
        raise RepotuneError(
            f"params.yaml: train.device must be cpu with {KEY} {path.name} (use_cpu: true), got {device}"
        )
    if not on_cpu:
        if device == "cpu":
            raise RepotuneError(
                f"params.yaml: train.device is cpu but {KEY} {path.name} is a GPU config "
                "(use_cpu: false): choose a CPU config or train.device auto"
            )
        visible = cuda_devices()
        if visible < per_machine:
            raise RepotuneError(
                f"params.yaml: {KEY} {path.name} runs {per_machine} process(es) per machine on GPUs "
                f"but {visible} CUDA GPU(s) are visible here; choose a config with fewer processes, "
                "a CPU config, or train.launcher none"
            )
    return path


def launch_command(config: Path, script: Path, argv: Sequence[str]) -> list[str]:
    """``accelerate launch --config_file <config> <script> <argv>`` with this interpreter.

    ``python -m accelerate.commands.launch`` rather than the ``accelerate`` script: the same
    venv as this process whatever PATH holds."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        str(script), *argv,
    ]


def relaunch(config: Path, script: Path, argv: Sequence[str]) -> None:
    """Run `script` with `argv` under accelerate's launcher (this process is only the launcher);
    a failed run exits with its status.

    The workers print their own errors; a failed worker makes the launcher exit non-zero."""
    print(f"launching {script.name} with accelerate ({config.name})", flush=True)
    status = subprocess.run(launch_command(config, script, argv), check=False).returncode
    if status:
        raise SystemExit(status)

