"""The base of every params model: a section of params.yaml, or a task's own part of one.

Apart from :mod:`repotune.params` (which imports the task registry to build its schema) so that a
task module can declare its own params (``task.<name>.extract``, ``task.<name>.filter``) with no
import cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every params section: frozen, strict types, unknown keys rejected."""

    # Infinite and NaN floats are never a valid setting (train.lr: .inf trained to NaN weights).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class NoParams(Section):
    """A task's part with no keys (``task.<name>.extract`` or ``.filter`` of a task that has none)."""
