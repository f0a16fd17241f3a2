"""Run a recipe: a params overlay under recipes/ as one named DVC experiment.

Each ``recipes/NAME.yaml`` holds only the params.yaml keys its reference setup changes. This
turns them into ``dvc exp run --name NAME -S key=value ...`` (values written as JSON, which
DVC's override grammar reads back exactly; ``+key`` for a key params.yaml does not have), so
the run is an ordinary experiment: ``dvc exp show`` lists it with its params and metrics, and
params.yaml in the workspace is left as it is.

    python recipes/run.py kotlin-completion             # runs it
    python recipes/run.py kotlin-completion --print     # only prints the dvc command
    python recipes/run.py kotlin-completion -- --queue  # anything after -- goes to dvc exp run
    python recipes/run.py kotlin-completion -- -S lora.r=8   # ... after the recipe's -S: yours win
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).resolve().parent


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; a list is a leaf (it replaces the whole list)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def has_key(tree: Mapping[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def overrides(recipe: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """``-S`` values for `recipe` applied on `params` (``+`` marks keys params lacks)."""
    return [
        f"{'' if has_key(params, key) else '+'}{key}={json.dumps(value, ensure_ascii=False)}"
        for key, value in leaves(recipe)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to dvc exp run as it is, after the recipe's own -S, so that
    # an -S given there overrides the recipe's value (DVC applies -S in order, the last wins).
    cut = argv.index("--") if "--" in argv else len(argv)
    argv, dvc_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s [-h] [--params PARAMS] [--print] name [-- DVC_EXP_RUN_ARGS...]"
    )
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    parser.add_argument("name", choices=names, help="recipe (a file recipes/NAME.yaml)")
    parser.add_argument("--params", default="params.yaml", help="the params file it overlays")
    parser.add_argument("--print", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)

    recipe = yaml.safe_load((RECIPES / f"{args.name}.yaml").read_text(encoding="utf-8")) or {}
    params = yaml.safe_load(Path(args.params).read_text(encoding="utf-8"))
    command = ["dvc", "exp", "run", "--name", args.name]
    for override in overrides(recipe, params):
        command += ["-S", override]
    command += dvc_args
    print(shlex.join(command))
    if args.print:
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
