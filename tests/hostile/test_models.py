"""Hostile or careless model sources: pickled weights, pickles that run code, remote code.

Only safetensors are loaded unless `model.allow_pickle` says otherwise; a pickle holding more
than tensors is refused even then; code shipped with a model never runs unless
`model.trust_remote_code` is on. Each refusal is one line from the stage, not a traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import load_stage

from repotune import atomic, errors


def pickled_copy(tiny_model: Path, dest: Path) -> Path:
    """The tiny model with its weights as a torch pickle (pytorch_model.bin) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_model, dest)
    for weights in dest.glob("*.safetensors"):
        weights.unlink()
    torch.save(load_file(tiny_model / "model.safetensors"), dest / "pytorch_model.bin")
    return dest


class _RunsCode:
    """A pickle that calls os.system when loaded: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_base(tmp_path: Path, model: dict, capsys) -> tuple[int, str]:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"source": {"url": "."}, "model": model}))
    code = errors.run(load_stage("base").main, ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "base")])
    return code, capsys.readouterr().err


def test_a_pickle_only_folder_is_refused_unless_allowed(tiny_model: Path, tmp_path: Path, capsys):
    folder = pickled_copy(tiny_model, tmp_path / "pickled")
    code, err = run_base(tmp_path, {"base": str(folder)}, capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "holds pickled weights only (pytorch_model.bin)" in err and "model.allow_pickle: true" in err
    assert not (tmp_path / "base").exists()

    code, err = run_base(tmp_path, {"base": str(folder), "allow_pickle": True}, capsys)
    assert code == 0, err
    manifest = atomic.read_json(tmp_path / "base/manifest.json")
    assert manifest["converted_from_pickle"] is True
    assert "converted to safetensors" in (tmp_path / "base/SOURCE.md").read_text()
    assert (tmp_path / "base/model.safetensors").is_file()
    assert not (tmp_path / "base/pytorch_model.bin").exists()


def test_the_same_weights_as_safetensors_say_nothing_of_pickles(tiny_model: Path, tmp_path: Path, capsys):
    code, err = run_base(tmp_path, {"base": str(tiny_model)}, capsys)
    assert code == 0, err
    assert atomic.read_json(tmp_path / "base/manifest.json")["converted_from_pickle"] is False
    assert "pickled" not in (tmp_path / "base/SOURCE.md").read_text()


def test_a_pickle_that_runs_code_is_refused_even_when_pickles_are_allowed(tiny_model: Path, tmp_path: Path, capsys):
    folder = pickled_copy(tiny_model, tmp_path / "evil")
    marker = tmp_path / "pwned"
    with (folder / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"model.embed_tokens.weight": _RunsCode(marker)}, f)
    code, err = run_base(tmp_path, {"base": str(folder), "allow_pickle": True}, capsys)
    assert code == 1 and err.count("error: ") == 1 and "Traceback" not in err, err
    assert "refused by torch's weights_only loader (Unsupported operand 149); nothing in them was run" in err
    assert not marker.exists()
    assert not (tmp_path / "base").exists()


def test_allow_pickle_means_nothing_for_a_gguf_source(tmp_path: Path, capsys):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    code, err = run_base(tmp_path, {"base": str(gguf), "allow_pickle": True}, capsys)
    assert code == 1 and "model.allow_pickle applies only to a local folder or a Hub id, not to a gguf source" in err


def test_code_shipped_with_a_model_does_not_run_with_trust_remote_code_off(tiny_model: Path, tmp_path: Path, capsys):
    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "ran"
    (folder / "evil_model.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import LlamaForCausalLM\nclass EvilModel(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil_model.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    code, err = run_base(tmp_path, {"base": str(folder)}, capsys)
    # transformers falls back to its own Llama class for a known model_type and never imports
    # the shipped module; an unknown model_type would stop with "trust_remote_code".
    assert code == 0, err
    assert not marker.exists()
    assert "auto_map" not in atomic.read_json(tmp_path / "base/config.json")
