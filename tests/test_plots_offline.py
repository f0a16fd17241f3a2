"""`dvc plots show` works with no network: the page inlines vega, vega-lite and vega-embed
(configs/plots/offline.html, through .dvc/config's plots.html_template), and the evaluate
stage's plots are PNGs rendered offline."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT, assert_not_blank, dvc, png_rows, project_copy


def test_dvc_plots_show_loads_no_script_from_the_network(tmp_path: Path):
    # A fresh copy of the tracked files (the committed curves and PNGs), as a fresh clone has.
    project = tmp_path / "project"
    project_copy(project)
    dvc(project, "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots/index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page), "a script is loaded from a file or the network"
    assert "cdn.jsdelivr.net" not in page
    # the three libraries are inlined, and every dvclive curve is on the page
    for name in ("vega@5.33.1", "vega-lite@5.23.0", "vega-embed@6.29.0"):
        assert f"/* {name} " in page, name
    curves = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "dvclive/train/plots/metrics").rglob("*.tsv"))
    assert len(curves) == 6
    assert page.count("vegaEmbed('#") == len(curves)
    for curve in curves:
        assert curve in page, curve
    # the evaluate stage's PNGs: copied beside the page, they decode and are not blank
    images = sorted((tmp_path / "plots/static").glob("*.png"))
    assert [p.name for p in images] == ["workspace_metrics_plots_sample_deltas.png", "workspace_metrics_plots_scores.png"]
    for image in images:
        assert len(png_rows(image)) > 150
        assert_not_blank(image)
