"""Each private-API shim in repotune.compat behaves as the public API it stands in for."""

from __future__ import annotations

import types

import pytest
from sacrebleu.metrics import BLEU, CHRF

from repotune import compat
from repotune.errors import RepotuneError

PREDS = ["Return the sum.", "Pop an item from the stack.", "", "Open the file."]
REFS = ["Return the sum of two numbers.", "Push an item onto the stack.", "Close it.", "Open the file."]


@pytest.mark.parametrize(("kind", "public"), [("chrf", CHRF), ("bleu", BLEU)])
def test_sacrebleu_statistics_give_the_public_corpus_and_sentence_scores(kind, public):
    scorer = compat.sacrebleu_scorer(kind)
    rows = compat.sacrebleu_sentence_stats(scorer, PREDS, REFS)
    assert rows.shape[0] == len(PREDS)
    assert compat.sacrebleu_score_from_stats(scorer, rows.sum(axis=0)) == public().corpus_score(PREDS, [REFS]).score
    # A subset of rows scores as that subset's corpus (what a bootstrap resample relies on).
    subset = [0, 3, 3]
    expected = public().corpus_score([PREDS[i] for i in subset], [[REFS[i] for i in subset]]).score
    assert compat.sacrebleu_score_from_stats(scorer, rows[subset].sum(axis=0)) == pytest.approx(expected)


def test_a_different_sacrebleu_version_is_refused(monkeypatch):
    monkeypatch.setattr(compat, "version", lambda package: "3.0.0")
    with pytest.raises(RepotuneError, match="sacrebleu 3.0.0 is installed, but repotune uses its private"):
        compat.sacrebleu_scorer("chrf")


def _shims():
    import torch

    return {
        "transformers": compat.kv_cache_classes,
        "trl": lambda: compat.completion_positions_only().__enter__(),
        "torch": compat.onednn_linear_ops if torch.backends.mkldnn.is_available() else None,
        "dvclive": lambda: compat.quiet_live("unused"),
        "bitsandbytes": compat.int8_cast_warning_once,
    }


@pytest.mark.parametrize("package", ["transformers", "trl", "torch", "dvclive", "bitsandbytes"])
def test_every_shim_refuses_a_version_it_was_not_checked_with(package, monkeypatch):
    shim = _shims()[package]
    if shim is None:
        pytest.skip("this torch build has no oneDNN")
    real = compat.version
    monkeypatch.setattr(compat, "version", lambda name: "99.0.0" if name == package else real(name))
    with pytest.raises(RepotuneError, match=f"{package} 99.0.0 is installed, but repotune uses its private"):
        shim()


def test_a_vanished_private_name_fails_loudly_instead_of_running_slower(monkeypatch, tmp_path):
    import trl.trainer.utils as trl_utils
    from dvclive import Live

    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(RepotuneError, match=r"trl .* has no trl.trainer.utils._use_triton"):
        compat.completion_positions_only().__enter__()
    monkeypatch.delattr(Live, "_init_dvc")
    with pytest.raises(RepotuneError, match=r"dvclive .* has no Live._init_dvc"):
        compat.quiet_live(str(tmp_path / "live"))

    class Trainer:  # a TRL trainer that no longer counts its tokens
        pass

    with pytest.raises(RepotuneError, match=r"has no SFTTrainer._total_train_tokens"):
        compat.trained_tokens(Trainer())


def test_the_trl_switch_scores_labelled_positions_on_cpu_and_is_restored():
    import torch
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    assert original(torch.device("cpu")) is False  # TRL's own choice: every position on CPU
    with compat.completion_positions_only():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton is original


def test_quiet_live_writes_curves_without_touching_git_or_dvc(tmp_path, monkeypatch):
    """dvclive on its own runs `dvc init` in a git repository without DVC; the shim must not."""
    import git

    repo = git.Repo.init(tmp_path)
    monkeypatch.chdir(tmp_path)
    live = compat.quiet_live("dvclive/train")
    for step, loss in enumerate([3.0, 2.5]):
        live.step = step
        live.log_metric("train/loss", loss)
        live.next_step()
    live.end()
    assert not (tmp_path / ".dvc").exists()
    assert not (tmp_path / "dvclive" / "train" / "dvc.yaml").exists()
    assert not repo.index.entries  # nothing git-added
    curve = (tmp_path / "dvclive/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert curve == ["step\tloss", "0\t3.0", "1\t2.5"]


def test_onednn_ops_compute_a_linear_layer():
    import torch

    ops = compat.onednn_linear_ops()
    if ops is None:
        pytest.skip("this torch build has no oneDNN")
    pack, linear = ops
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        assert torch.allclose(linear(x, pack(layer.weight, 3), layer.bias), layer(x), atol=1e-5)


def test_kv_cache_classes_are_the_transformers_ones():
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    assert compat.kv_cache_classes() == (Cache, DynamicCache, DynamicLayer)


def test_the_other_trl_transformers_and_bitsandbytes_shims_check_their_version(monkeypatch):
    real = compat.version
    model = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="sdpa"))
    shims = {
        "trl": [compat.check_trainer_internals, lambda: compat.lora_weights_in_fp32(None)],
        "transformers": [lambda: compat.attention_implementation(model)],
        "bitsandbytes": [lambda: compat.avx512bf16_kernel_only_where_it_fits(None)],
    }
    for package, calls in shims.items():
        monkeypatch.setattr(compat, "version", lambda name, package=package: "99.0.0" if name == package else real(name))
        for call in calls:
            with pytest.raises(RepotuneError, match=f"{package} 99.0.0 is installed, but repotune uses its private"):
                call()


def test_attention_implementation_is_the_one_the_model_was_built_with():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    for attention in ("eager", "sdpa"):
        model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=attention))
        assert compat.attention_implementation(model) == attention


def test_count_trained_tokens_adds_to_trls_counter_and_its_logged_values():
    from collections import defaultdict

    trainer = types.SimpleNamespace(_total_train_tokens=10, _metrics={"train": defaultdict(list),
                                                                      "eval": defaultdict(list)})
    metrics = compat.count_trained_tokens(trainer, 7)
    assert compat.trained_tokens(trainer) == 17
    assert metrics is trainer._metrics["train"] and metrics["num_tokens"] == [17]
    metrics = compat.count_trained_tokens(trainer, 5, mode="eval")  # evaluation trains on nothing
    assert compat.trained_tokens(trainer) == 17
    assert metrics is trainer._metrics["eval"] and metrics["num_tokens"] == [17]
    with pytest.raises(RepotuneError, match=r"has no SFTTrainer._total_train_tokens/_metrics"):
        compat.count_trained_tokens(types.SimpleNamespace(_total_train_tokens=0), 1)


def test_lora_weights_in_fp32_casts_only_the_trainable_weights():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    compat.lora_weights_in_fp32(types.SimpleNamespace(model=model))
    assert {p.dtype for p in model[1].parameters()} == {torch.float32}
    assert {p.dtype for p in model[0].parameters()} == {torch.bfloat16}


def test_the_avx512bf16_switch_is_turned_off_for_layers_it_cannot_take():
    layer = types.SimpleNamespace(support_avx512bf16_for_cpu=True, out_features=32, in_features=48,
                                  weight=types.SimpleNamespace(quant_state=types.SimpleNamespace(blocksize=64)))
    fits = types.SimpleNamespace(support_avx512bf16_for_cpu=True, out_features=64, in_features=128,
                                 weight=types.SimpleNamespace(quant_state=types.SimpleNamespace(blocksize=64)))
    compat.avx512bf16_kernel_only_where_it_fits(types.SimpleNamespace(modules=lambda: [layer, fits]))
    assert (layer.support_avx512bf16_for_cpu, fits.support_avx512bf16_for_cpu) == (False, True)
