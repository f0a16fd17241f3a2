"""Tasks: each is a module that owns everything task-specific, looked up in :data:`TASKS`.

A task module is a :class:`Task`: the Protocol names every attribute callers use, and
tests/test_tasks.py checks that every registered task provides each, with the right kind
(function or constant). The contract, by the stage that reads it:

- params: ``Params``, the task's own knobs (a :class:`repotune.sections.Section` with two
  sections, ``extract`` and ``filter``, each read by the stage of its name): params.yaml's
  ``task.<name>`` (``task.docstring.extract.target``, ``task.completion.extract.window``); the
  schema's ``task`` section is assembled from :data:`TASKS`;
- extract: ``samples(definitions, text, extract, counts, **context)``: partial records cut from
  one parsed file (``kind``, ``name``, ``start_line``, ``end_line``, ``input``, ``target`` and
  any fields its filters need), `extract` being its ``task.<name>.extract``; ``context`` holds
  the file's ``language`` and ``path`` and, for a task with ``NEEDS_TOKENIZER``, the base
  model's ``tokenizer``; a task asks the language (:mod:`repotune.languages`) about syntax;
- filter: ``drop_reason(record, filter_params, own)``: its own reasons to drop a sample (the
  shared ``filter`` section and its ``task.<name>.filter``);
  ``DUPLICATE_TARGETS``: whether samples with the same target (and name) are duplicates too;
  ``KEEP_INPUT`` (``head`` or ``tail``) says which end of a too-long input to keep;
- prompts, train, generate: ``PROMPTS`` (named default templates, ``{code}`` =
  :func:`prompt_input`; params.yaml's ``prompt.template`` and ``generate.templates`` are
  checked against them when params load), ``prompt_input(record)``, ``completion(record)`` (the
  text trained to follow the prompt), ``default_stop(extract)`` (stop strings when
  ``decoding.stop`` is null; `extract`: its ``task.<name>.extract``, which decides the shape of
  a target), ``STOP_AFTER_LEADING_WHITESPACE`` and ``postprocess(raw, stop, extract)`` (model
  output -> prediction); ``DECODING``: its values for
  the ``decoding`` keys left null (see :func:`resolved_decoding`), and ``TRAINING`` for the
  ``train`` keys left null (see :func:`resolved_training`);
- judge: ``JUDGE_PROMPT``: the rating prompt when ``judge.prompt`` is null (``{code}``: the
  prompt input, ``{target}``: the target);
- ``CHAT_PROMPT``: the request put to an instruct model through its chat template, for the
  ``base_chat`` system (the base at the prompt that suits it; None: the task has none), and
  ``chat_answer(raw)``: the answer inside such a reply (unwrapped from quotes, fences);
- evaluate: ``wrong_kind(output, raw)`` and ``WRONG_KIND`` (its rule, in words): whether an
  output is not the kind the task asks for (a degenerate check, see ``repotune.degenerate``);
  ``METRICS``: names of its metrics in ``repotune.metrics.METRICS`` (report order), and
  ``PRIMARY_METRIC``: the one the verdict, the headline of metrics/evaluate.json, the
  report's examples and the per-sample histogram use (``evaluate.primary`` overrides it, checked
  against ``METRICS`` when params load);
- distill: ``DOC_TARGETS``: whether targets are the definitions' doc comments, so that a
  definition without one is an input a teacher can label (``distill.undocumented``);
- retrieve: ``RETRIEVAL_QUERY`` (``tail``: the last ``retrieval.query_lines`` lines of the
  input; ``whole``: all of it) and ``CONTEXT_LEAK``: what of the target a retrieved chunk must
  not hold (``identifier``: the target as a whole identifier; ``text``: its text, verbatim or as
  a near-duplicate; None: nothing refused), see ``repotune.retrieval``.

Adding a task: a module here and one line in :data:`TASKS` (or :func:`register`, for a task
defined elsewhere); see docs/extending.md. The engine that runs ``samples`` over a repository's
files is :mod:`repotune.extraction`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from repotune.sections import Section
from repotune.tasks import completion, docstring, method_name

if TYPE_CHECKING:
    from repotune.languages import Definition
    from repotune.params import DecodingParams, FilterParams, TrainParams


class Task(Protocol):
    """What a task module provides (see the module docstring for what each one means).

    Constants are annotated; functions are written as methods (a module's functions take no
    ``self``). tests/test_tasks.py checks every task of :data:`TASKS` against this list.
    """

    # params: task.<name> (its fields: extract, filter)
    Params: type[Section]

    # extract
    NEEDS_TOKENIZER: bool

    def samples(
        self, definitions: Sequence[Definition], text: str, extract: Section, counts: Counter, **context: Any,
    ) -> Iterator[dict[str, Any]]: ...

    # filter
    DUPLICATE_TARGETS: bool
    KEEP_INPUT: Literal["head", "tail"]

    def drop_reason(self, record: Mapping[str, Any], params: FilterParams, own: Section) -> str | None: ...

    # prompts, train, generate
    PROMPTS: Mapping[str, str]
    JUDGE_PROMPT: str
    CHAT_PROMPT: str | None
    DECODING: Mapping[str, Any]
    TRAINING: Mapping[str, Any]
    STOP_AFTER_LEADING_WHITESPACE: bool

    def prompt_input(self, record: Mapping[str, Any]) -> str: ...

    def completion(self, record: Mapping[str, Any]) -> str: ...

    def default_stop(self, extract: Section) -> list[str]: ...

    def postprocess(self, raw: str, stop: Sequence[str], extract: Section) -> str: ...

    def chat_answer(self, raw: str) -> str: ...

    # evaluate
    METRICS: tuple[str, ...]
    PRIMARY_METRIC: str
    WRONG_KIND: str

    def wrong_kind(self, output: str, raw: str) -> bool: ...

    # distill
    DOC_TARGETS: bool

    # retrieve
    RETRIEVAL_QUERY: Literal["tail", "whole"]
    CONTEXT_LEAK: Literal["identifier", "text"] | None


TASKS: dict[str, Task] = {
    "docstring": docstring,
    "completion": completion,
    "method_name": method_name,
}
# Not task names: the keys of params.yaml's task section besides the tasks' own, and the parts
# of a task's params.
_RESERVED = {"name", "extract", "filter"}


def register(name: str, module: Task) -> None:
    """Add a task to :data:`TASKS` at run time: a task defined outside this package (a plugin, a
    test). params.yaml then accepts ``task.name: <name>`` and ``task.<name>.*`` (the schema is
    assembled from the registry when params load). The built-in tasks are listed in TASKS."""
    if not name.isidentifier() or name in _RESERVED:
        raise ValueError(f"{name!r} cannot name a task: an identifier, not one of {sorted(_RESERVED)}")
    fields = set(getattr(getattr(module, "Params", None), "model_fields", {}))
    if fields != {"extract", "filter"}:
        raise ValueError(f"task {name!r}: its Params must be a params section with the fields extract and filter")
    TASKS[name] = module


def task(name: str) -> Task:
    """The module of task `name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def resolved_decoding(decoding: DecodingParams, task_name: str) -> DecodingParams:
    """`decoding` with each key left null (None) set to the task's own default (its
    ``DECODING``); a value set in params.yaml always wins. Generation takes only resolved
    settings, and the generate stage records them beside the outputs."""
    return _filled(decoding, task(task_name).DECODING)



def resolved_training(train: TrainParams, task_name: str) -> TrainParams:
    """`train` with each key left null (None) set to the task's own default (its ``TRAINING``:
    the learning rate, which differs by task); a value set in params.yaml always wins. The
    train stage records the values applied in metrics/train.json."""
    return _filled(train, task(task_name).TRAINING)


def _filled(section, defaults: dict[str, Any]):
    """`section` (a params model) with each of `defaults`' keys that it leaves None set."""
    return section.model_copy(update={key: value for key, value in defaults.items() if getattr(section, key) is None})
