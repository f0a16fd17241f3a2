"""A KV cache of fixed slots for continuous batching with transformers models.

Each of ``batch`` slots holds one sequence: its keys and values sit at columns
``[0, lengths[slot])`` of one buffer per layer, shaped ``[batch, kv_heads, capacity, head_dim]``
and allocated once. A decoding step feeds one token per active slot; every layer writes that
token's key and value at its slot's own column (``lengths[slot]``) and attends over the first
``width`` columns, with a 4D mask that hides each slot's columns past its own length. Slots
therefore hold sequences of any length side by side, without left padding, and a finished
slot takes a new prompt (:meth:`SlotCache.load`) while the others carry on.

Only plain full-attention layers are supported (:func:`supports`); sliding-window and
linear-attention layers keep other state. This module imports torch and transformers at the
top: import it inside functions (see ``repotune.generation``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import PreTrainedModel

from repotune.compat import kv_cache_classes

# The layer internals subclassed below are private: compat checks them (and the version).
Cache, DynamicCache, DynamicLayer = kv_cache_classes()


def supports(model: PreTrainedModel) -> bool:
    """Whether every layer of `model` caches plain full-attention keys and values.

    transformers decides the layer types from the config (``DynamicCache(config=...)``): a
    sliding-window, linear-attention or KV-sharing layer is another class than DynamicLayer.
    """
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class _SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot, in one preallocated buffer."""

    def __init__(self, cache: SlotCache) -> None:
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        shape = (self.cache.batch, key_states.shape[1], self.cache.capacity, key_states.shape[-1])
        self.keys = key_states.new_zeros(shape)
        self.values = value_states.new_zeros(shape[:3] + (value_states.shape[-1],))
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's token ([active, kv_heads, 1, head_dim]) at each slot's length."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        cache = self.cache
        n = cache.active
        rows, columns = cache.rows[:n], cache.lengths[:n]
        self.keys[rows, :, columns] = key_states[:, :, 0]
        self.values[rows, :, columns] = value_states[:, :, 0]
        # Views, not copies: the step attends over the columns any active slot has filled.
        return self.keys[:n, :, : cache.width], self.values[:n, :, : cache.width]

    def get_seq_length(self) -> int:
        return self.cache.width


class SlotCache(Cache):
    """Keys and values of up to `batch` sequences of up to `capacity` tokens each.

    Slots ``[0, active)`` hold sequences; :meth:`step_inputs` gives the position ids and the
    attention mask of the next decoding step, :meth:`advance` records that it happened.

    Args:
        num_layers: decoder layers of the model.
        batch: number of slots.
        capacity: the most tokens one slot holds (prompt + generated).
        device: where the buffers and indices live.
    """

    def __init__(self, num_layers: int, batch: int, capacity: int, device: torch.device | str) -> None:
        self.batch, self.capacity = batch, capacity
        self.rows = torch.arange(batch, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)  # tokens cached per slot
        self.active = 0  # slots [0, active) hold a sequence
        self.width = 0  # key/value columns the current step attends over
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])

    @classmethod
    def for_prompts(
        cls, model: PreTrainedModel, batch: int, prompt_lengths: Iterable[int], max_new_tokens: int
    ) -> SlotCache:
        """`batch` slots for `model`, each long enough for the longest of `prompt_lengths` plus
        `max_new_tokens`, on the model's device."""
        capacity = max(prompt_lengths) + max_new_tokens
        return cls(model.config.get_text_config().num_hidden_layers, batch, capacity, model.device)

    def load(self, slot: int, prefill: Cache) -> None:
        """Copy the keys and values of one prefilled sequence (a batch-1 cache) into `slot`."""
        length = prefill.layers[0].keys.shape[-2]
        if length >= self.capacity:
            raise ValueError(f"a sequence of {length} tokens does not fit a slot of {self.capacity}")
        for layer, source in zip(self.layers, prefill.layers, strict=True):
            if not layer.is_initialized:
                layer.lazy_initialization(source.keys, source.values)
            layer.keys[slot, :, :length] = source.keys[0]
            layer.values[slot, :, :length] = source.values[0]
        self.lengths[slot] = length

    def reorder(self, targets: list[int], sources: list[int]) -> None:
        """Slot ``targets[i]`` takes the sequence of slot ``sources[i]``, all at once (a
        source may also be a target: beam search's new beams copy their parents)."""
        pairs = [(target, source) for target, source in zip(targets, sources, strict=True) if target != source]
        if not pairs:
            return
        device = self.lengths.device
        target_rows = torch.tensor([target for target, _ in pairs], device=device)
        source_rows = torch.tensor([source for _, source in pairs], device=device)
        length = int(self.lengths[source_rows].max())
        for layer in self.layers:
            if layer.is_initialized:
                for buffer in (layer.keys, layer.values):
                    filled = buffer[:, :, :length]  # a view; index_select copies the sources first
                    filled.index_copy_(0, target_rows, filled.index_select(0, source_rows))
        self.lengths[target_rows] = self.lengths[source_rows]

    def step_inputs(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids [active, 1] and additive attention mask [active, 1, 1, width] of a step.

        Each slot's new token sits at position ``lengths[slot]`` and may attend to its own
        columns ``0..lengths[slot]`` only; the mask is additive (0 or the dtype's minimum), the
        form that both the sdpa and the eager attention of transformers accept as given.
        """
        lengths = self.lengths[: self.active]
        if int(lengths.max()) >= self.capacity:
            raise ValueError(f"a slot is full ({self.capacity} tokens)")
        self.width = int(lengths.max()) + 1
        columns = torch.arange(self.width, device=lengths.device)
        visible = columns[None, :] <= lengths[:, None]
        mask = torch.zeros(visible.shape, dtype=dtype, device=lengths.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return lengths[:, None].clone(), mask[:, None, None, :]

    def advance(self) -> None:
        """Count the token every active slot has just cached."""
        self.lengths[: self.active] += 1

    def decode(self, model: PreTrainedModel, last: list[int]) -> torch.Tensor:
        """One decoding step of `model`: each active slot's `last` token in, the next-token
        logits out ([active, vocab], float32); the step's keys and values are cached."""
        positions, mask = self.step_inputs(model.dtype)
        ids = torch.tensor(last, device=model.device)[:, None]
        logits = model(
            input_ids=ids, position_ids=positions, attention_mask=mask,
            past_key_values=self, use_cache=True, logits_to_keep=1,
        ).logits[:, -1].float()
        self.advance()
        return logits


def prefill(model: PreTrainedModel, prompt_ids: list[int]) -> tuple[Cache, torch.Tensor]:
    """One prompt through `model` alone (no padding): its batch-1 cache, for
    :meth:`SlotCache.load`, and the next-token logits ([vocab], float32)."""
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prompt_ids], device=model.device)
    logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    return cache, logits[0, -1].float()
