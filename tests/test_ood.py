"""Stage `ood`: each language mined from its own source; skipped languages; no samples at all."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git_repo, load_stage, write_params

from repotune import atomic

SHAPES_PY = '''\
def area(width, height):
    """Return the area of a rectangle whose sides are width and height."""
    return width * height


def perimeter(width, height):
    """Return the perimeter of a rectangle whose sides are width and height."""
    return 2 * (width + height)
'''

GEO_KT = '''\
package geo

/** Compute the distance between two points on the plane, in the units of the inputs. */
fun distance(ax: Double, ay: Double, bx: Double, by: Double): Double {
    val dx = ax - bx
    val dy = ay - by
    return Math.sqrt(dx * dx + dy * dy)
}

/**
 * Return the midpoint of the segment between two points, as a pair of coordinates.
 */
fun midpoint(ax: Double, ay: Double, bx: Double, by: Double): Pair<Double, Double> {
    return Pair((ax + bx) / 2, (ay + by) / 2)
}
'''

# A file of the other language in each repository: a source gives its own language only.
STRAY_KT = '/** Stray Kotlin code in the Python repository, which must never be mined. */\nfun stray(): Int = 1\n'
STRAY_PY = 'def stray():\n    """Stray Python code in the Kotlin repository, which must never be mined."""\n    return 1\n'


def ood_params(root: Path, languages: list[str], sources: dict[str, str] | None, **sections) -> Path:
    """params.yaml for a docstring run on `languages`, `sources` as ood.sources
    (language -> local repository; None: ood null)."""
    ood = None if sources is None else {
        "sources": {lang: {"url": url, "rev": "main"} for lang, url in sources.items()}, "max_samples": 10,
    }
    defaults = {
        "extract": {"languages": languages, "workers": 1},
        "task": {"docstring": {"filter": {"min_target_tokens": 5}}},
        "ood": ood,
        "generate": {"device": "cpu", "threads": 1},
        "decoding": {"max_new_tokens": 4, "batch_size": 2, "stop": []},
    }
    for name, values in sections.items():
        defaults.setdefault(name, {}).update(values)
    return write_params(root, **defaults)


def run_ood(root: Path, params: Path, base: Path | None = None) -> tuple[list[dict], dict]:
    # No tokenizer is needed for docstrings: a base folder that does not exist proves it.
    load_stage("ood").main([
        "--params", str(params), "--base", str(base or root / "no-model"),
        "--out", str(root / "data/ood.jsonl"), "--metrics", str(root / "metrics/ood.json"),
    ])
    return atomic.read_jsonl(root / "data/ood.jsonl"), json.loads((root / "metrics/ood.json").read_text())


def test_two_languages_each_from_its_own_source(tmp_path):
    py = git_repo(tmp_path / "py", {"lib/shapes.py": SHAPES_PY, "lib/Stray.kt": STRAY_KT})
    kt = git_repo(tmp_path / "kt", {"src/main/kotlin/geo/Geo.kt": GEO_KT, "tools/stray.py": STRAY_PY})
    sources = {"python": py.working_dir, "kotlin": kt.working_dir}
    records, metrics = run_ood(tmp_path, ood_params(tmp_path, ["python", "kotlin"], sources))

    # Languages in name order (kotlin, python), each in its file's source order; no stray code.
    assert [(r["language"], r["name"], r["repo"], r["sha"]) for r in records] == [
        ("kotlin", "distance", kt.working_dir, kt.head.commit.hexsha),
        ("kotlin", "midpoint", kt.working_dir, kt.head.commit.hexsha),
        ("python", "area", py.working_dir, py.head.commit.hexsha),
        ("python", "perimeter", py.working_dir, py.head.commit.hexsha),
    ]
    assert records[0]["target"] == "Compute the distance between two points on the plane, in the units of the inputs."
    assert records[0]["path"] == "src/main/kotlin/geo/Geo.kt"
    assert metrics == {
        "enabled": True, "samples": 4, "samples_extracted": 4,
        "languages": {
            "kotlin": {"url": kt.working_dir, "rev": "main", "sha": kt.head.commit.hexsha, "files": 2,
                       "files_parsed": 1, "samples_extracted": 2, "samples": 2},
            "python": {"url": py.working_dir, "rev": "main", "sha": py.head.commit.hexsha, "files": 2,
                       "files_parsed": 1, "samples_extracted": 2, "samples": 2},
        },
    }

    # The order of extract.languages changes nothing, to the byte.
    first = [(tmp_path / name).read_bytes() for name in ("data/ood.jsonl", "metrics/ood.json")]
    run_ood(tmp_path, ood_params(tmp_path, ["kotlin", "python"], sources))
    assert [(tmp_path / name).read_bytes() for name in ("data/ood.jsonl", "metrics/ood.json")] == first


def test_a_language_without_a_source_is_skipped_and_unused_sources_are_not_cloned(tmp_path):
    py = git_repo(tmp_path / "py", {"lib/shapes.py": SHAPES_PY})
    # A Kotlin source that does not exist: a run without Kotlin must never touch it.
    sources = {"python": py.working_dir, "kotlin": str(tmp_path / "missing")}
    records, metrics = run_ood(tmp_path, ood_params(tmp_path, ["python", "java"], sources))
    assert [r["name"] for r in records] == ["area", "perimeter"]
    assert metrics["enabled"] is True and metrics["samples"] == 2 and "skipped" not in metrics
    assert metrics["languages"]["java"] == {"skipped": "no source in ood.sources"}
    assert sorted(metrics["languages"]) == ["java", "python"]


def test_no_samples_at_all_skips_the_check_through_generate_and_evaluate(tmp_path, lively_model):
    py = git_repo(tmp_path / "py", {"lib/shapes.py": SHAPES_PY})
    # Kotlin's source holds no Kotlin; Java has no source.
    params = ood_params(tmp_path, ["kotlin", "java"], {"kotlin": py.working_dir})
    records, metrics = run_ood(tmp_path, params, base=lively_model)
    assert records == [] and (tmp_path / "data/ood.jsonl").read_bytes() == b""
    reason = (f"java: no source in ood.sources; kotlin: no docstring samples kept from "
              f"{py.working_dir} (0 extracted, 0 kotlin files parsed)")
    assert metrics["enabled"] is False and metrics["skipped"] == reason
    assert metrics["languages"]["kotlin"]["sha"] == py.head.commit.hexsha
    assert metrics["languages"]["kotlin"]["samples"] == 0

    test = [
        {"id": f"t{i}", "input": f"def f{i}(a, b):\n    return a + {i}", "target": f"Return a plus {i}.",
         "repo": "r", "sha": "0" * 40, "path": f"m{i}.py", "language": "python", "kind": "function",
         "name": f"f{i}", "start_line": 1, "end_line": 2}
        for i in range(3)
    ]
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", test)
    for system in ("base", "finetuned"):
        load_stage("generate").main([
            "--system", system, "--model", str(lively_model), "--params", str(params),
            "--test", str(tmp_path / "data/split/test.jsonl"), "--ood", str(tmp_path / "data/ood.jsonl"),
            "--out", str(tmp_path / "data/generations" / system),
            "--metrics", str(tmp_path / f"metrics/generate/{system}.json"),
        ])
        assert sorted(p.name for p in (tmp_path / "data/generations" / system).iterdir()) == ["test.plain.jsonl"]
    load_stage("evaluate").main([
        "--params", str(params), "--generations", str(tmp_path / "data/generations"),
        "--test", str(tmp_path / "data/split/test.jsonl"), "--ood", str(tmp_path / "data/ood.jsonl"),
        "--stage-metrics", str(tmp_path / "metrics"), "--out", str(tmp_path / "metrics"),
    ])
    head = json.loads((tmp_path / "metrics/evaluate.json").read_text())
    assert head["samples"] == 3 and not any(key.startswith("ood_") for key in head)
    report = (tmp_path / "metrics/report.md").read_text()
    assert f"- ood: no out-of-domain check: {reason}\n" in report
    assert "## ood" not in report


def test_ood_null_writes_an_empty_set_and_says_so(tmp_path):
    records, metrics = run_ood(tmp_path, ood_params(tmp_path, ["python"], None))
    assert records == [] and metrics == {"enabled": False, "skipped": "ood is null"}
