"""Recipes: each overlay is valid params once applied, through DVC's own `-S` parser."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from repotune import params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipes_run", ROOT / "recipes" / "run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)
NAMES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_there_are_the_four_reference_recipes():
    assert NAMES == ["kotlin-completion", "kotlin-method-names", "python-class-docstrings",
                     "python-framework-completion"]


@pytest.mark.parametrize("name", NAMES)
def test_recipe_overrides_give_exactly_the_overlay_through_dvc(name, tmp_path):
    from dvc.utils.hydra import apply_overrides

    recipe = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    apply_overrides(target, run.overrides(recipe, base))  # what `dvc exp run -S` does
    applied = yaml.safe_load(target.read_text())
    assert applied == merged(base, recipe)
    params.parse(applied)  # and the result is valid params


def test_recipe_files_comment_every_key():
    for name in NAMES:
        for number, line in enumerate((ROOT / "recipes" / f"{name}.yaml").read_text().splitlines(), 1):
            is_section = not line.startswith(" ") and line.endswith(":")
            if line.strip() and not is_section and not line.lstrip().startswith(("#", "- ")):
                assert "#" in line, f"recipes/{name}.yaml:{number} has no comment"


def test_print_shows_the_dvc_command(capsys):
    assert run.main(["python-class-docstrings", "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dvc exp run --name python-class-docstrings -S 'filter.kinds=[\"class\"]'")


@pytest.mark.parametrize("argv", [
    ["kotlin-completion", "--print", "--", "--queue", "-S", "train.max_samples=40"],
    ["--print", "kotlin-completion", "--", "--queue", "-S", "train.max_samples=40"],
])
def test_arguments_after_the_separator_follow_the_recipe_so_their_settings_win(argv, capsys, tmp_path):
    from dvc.utils.hydra import apply_overrides

    assert run.main(argv) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[-3:] == ["--queue", "-S", "train.max_samples=40"]
    settings = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    apply_overrides(target, settings)  # in order, as `dvc exp run -S ... -S ...` applies them
    applied = yaml.safe_load(target.read_text())
    assert applied["train"]["max_samples"] == 40  # the recipe says 160; the user's setting wins
    assert applied["lora"]["r"] == 16


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_scores_first_the_template_it_trains(name):
    from repotune import evalsets

    recipe = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    p = params.parse(merged(yaml.safe_load((ROOT / "params.yaml").read_text()), recipe))
    assert evalsets.templates(p.generate.templates, p.prompt.template)[0] == p.prompt.template
