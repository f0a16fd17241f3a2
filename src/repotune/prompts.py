"""Prompts and completions: the one place that decides what the model sees and must write.

Training (`train`), the merge check (`merge`) and generation (`generate`) all build prompts
with a :class:`Prompter`, so the model is scored on exactly the text layout it was trained on.
A template is named (``prompt.template``) and comes from ``prompt.templates.<task>.<name>`` in
params.yaml or else from the task's own defaults (``PROMPTS`` of its module); ``{code}`` is the
task's prompt input. With ``prompt.chat_template`` the filled template is the user turn of the
tokenizer's chat template (after ``prompt.system``, if any), rendered with the generation
prompt; otherwise it is used as plain text.

Context (a system's ``context``, see ``generate.systems``): a record may carry the context the
retrieve stage found for it (:func:`with_context`), rendered by :func:`context_lines` into
the template's ``{context}`` slot, or at the start of the prompt when the template has none
(so every template takes context, and a record without context renders as it always did):

- ``retrieval``: each chunk of another file as line comments of the sample's language (its
  ``LINE_COMMENT``), under a comment naming the chunk's path (``# pkg/util.py``), best first;
- ``prefix`` (the same-budget control): the code of the sample's own file just before its
  input, as it stands in the file (for a completion window, a longer prefix).

Training and generation both render through :class:`Prompter`, so a model is scored on the
layout it was trained on. Fitting a prompt to a length cuts the context first (whole lines:
a retrieval context loses its last lines, the worst chunk first; a prefix its first lines, the
farthest from the input), then the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from repotune import atomic
from repotune.errors import RepotuneError
from repotune.languages import line_comment
from repotune.tasks import task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.params import PromptParams

PLACEHOLDER = "{code}"
CONTEXT_PLACEHOLDER = "{context}"
_SLOTS = re.compile(re.escape(PLACEHOLDER) + "|" + re.escape(CONTEXT_PLACEHOLDER))
# Context kinds a record can carry (``none`` carries nothing), and which end of each survives a
# cut: a retrieval context keeps its best chunks (the head), a prefix the code next to the
# input (the tail).
CONTEXT_KEEP = {"retrieval": "head", "prefix": "tail"}


def fill(template: str, code: str, context: str = "") -> str:
    """`template` with ``{code}`` and ``{context}`` filled in one pass (so that code holding the
    text ``{context}``, or context holding ``{code}``, stays as written; ``str.format`` would
    choke on code's braces); a template without ``{context}`` gets the context first."""
    if CONTEXT_PLACEHOLDER not in template:
        template = CONTEXT_PLACEHOLDER + template
    return _SLOTS.sub(lambda m: code if m.group() == PLACEHOLDER else context, template)


def context_lines(record: Mapping[str, Any]) -> list[str]:
    """The lines of `record`'s context as a prompt shows it (each with its newline, but for a
    prefix's last, which runs into the input), see the module docstring; [] without context."""
    context = record.get("context")
    if not context or not context["chunks"]:
        return []
    if context["kind"] == "prefix":
        return "".join(c["text"] for c in context["chunks"]).splitlines(keepends=True)
    if context["kind"] != "retrieval":
        raise ValueError(f"unknown context kind {context['kind']!r}; known: {', '.join(CONTEXT_KEEP)}")
    marker = line_comment(record["language"])
    lines = []
    for chunk in context["chunks"]:
        lines.append(f"{marker} {chunk['path']}\n")
        lines += [f"{marker} {line}".rstrip() + "\n" for line in chunk["text"].splitlines()]
    return lines


def with_context(
    records: Sequence[Mapping[str, Any]], path: str | Path, kind: str
) -> list[dict[str, Any]]:
    """`records`, each with its context of `kind` from `path` (a context file of the retrieve
    stage, ``data/retrieved/<kind>/<set>.jsonl``: per sample its id and chunks) as
    ``context: {kind, chunks}``; ``none``: the records as they are.

    Raises:
        RepotuneError: a record has no context in `path` (the retrieve stage did not run with
            retrieval.enabled, or on other samples).
    """
    if kind == "none":
        return [dict(r) for r in records]
    if kind not in CONTEXT_KEEP:
        raise ValueError(f"unknown context kind {kind!r}; known: none, {', '.join(CONTEXT_KEEP)}")
    found = {row["id"]: row["chunks"] for row in atomic.iter_jsonl(path)}
    missing = [r["id"] for r in records if r["id"] not in found]
    if missing:
        raise RepotuneError(
            f"{path}: no {kind} context for {len(missing)} of {len(records)} samples (first: {missing[0]}); "
            "run the retrieve stage with retrieval.enabled: true on these splits"
        )
    return [{**r, "context": {"kind": kind, "chunks": found[r["id"]]}} for r in records]


class Fitted(NamedTuple):
    """A prompt fitted to a length: its text, whether its code was cut, whether its context was."""

    prompt: str
    code_cut: bool
    context_cut: bool = False


def _largest(fits: Callable[[int], bool], high: int) -> int | None:
    """The largest k in [0, high] for which `fits(k)` (assumed monotone: true up to some k),
    by bisection; None when not even 0 fits."""
    if not fits(0):
        return None
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def template_text(prompt: PromptParams, task_name: str, name: str | None = None) -> str:
    """The text of template `name` (default ``prompt.template``) for `task_name`.

    Raises:
        RepotuneError: no such template, naming the ones there are.
    """
    name = name or prompt.template
    available = {**task(task_name).PROMPTS, **prompt.templates.get(task_name, {})}
    if name not in available:
        raise RepotuneError(
            f"params.yaml: prompt template {name!r} is not defined for task {task_name!r} "
            f"(defined: {', '.join(sorted(available))}; add one under prompt.templates.{task_name})"
        )
    return available[name]


def chat(
    text: str,
    tokenizer: PreTrainedTokenizerBase | None,
    system: str | None = None,
    key: str = "prompt.chat_template",
) -> str:
    """`text` as the user turn of the tokenizer's chat template, ending with the generation prompt.

    Raises:
        RepotuneError: the tokenizer has no chat template (`key` names the param that asked for it).
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise RepotuneError(f"{key} is true but the model's tokenizer has no chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The tokenizer adds its BOS itself when the prompt is tokenised; a template that
    # writes it too would give two.
    bos = tokenizer.bos_token
    if bos and rendered.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        rendered = rendered[len(bos):]
    return rendered


@dataclass(frozen=True)
class Prompter:
    """Builds prompts and completions for one task, template and rendering.

    Attributes:
        task_name: a key of ``repotune.tasks.TASKS``.
        template: the template text, with ``{code}``.
        chat_template: render through the tokenizer's chat template.
        system: the system prompt of the chat (chat templates only).
    """

    task_name: str
    template: str
    chat_template: bool = False
    system: str | None = None

    @classmethod
    def from_params(cls, prompt: PromptParams, task_name: str, name: str | None = None) -> Prompter:
        return cls(task_name, template_text(prompt, task_name, name), prompt.chat_template, prompt.system)

    def prompt(
        self, record: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None,
        context_kept: int | None = None,
    ) -> str:
        """The prompt of `record` (with its context, if it has one), ending where the model's
        completion starts; `context_kept`: keep only that many lines of the context (its
        kind's end, see :data:`CONTEXT_KEEP`), None = all."""
        lines = context_lines(record)
        if context_kept is not None and context_kept < len(lines):
            head = CONTEXT_KEEP[record["context"]["kind"]] == "head"
            lines = lines[:context_kept] if head else lines[len(lines) - context_kept:]
        text = fill(self.template, task(self.task_name).prompt_input(record), "".join(lines))
        if not self.chat_template:
            return text
        return chat(text, tokenizer, self.system, "prompt.chat_template")

    def completion(self, record: Mapping[str, Any]) -> str:
        """The text the model is trained to write after the prompt (TRL appends EOS)."""
        text = task(self.task_name).completion(record)
        return text.strip() if self.chat_template else text

    def rows(
        self, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase | None = None
    ) -> list[dict[str, str]]:
        """Prompt/completion rows in TRL's prompt-completion format."""
        return [{"prompt": self.prompt(r, tokenizer), "completion": self.completion(r)} for r in records]

    def fitted_prompt(
        self, record: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, budget: int
    ) -> Fitted | None:
        """The prompt of `record` in at most `budget` tokens (the tokenizer's special tokens
        included): first the context loses whole lines (see :data:`CONTEXT_KEEP`), down to
        none; then the code is cut on a token boundary (the task's ``KEEP_INPUT`` end kept:
        the head of a definition, the tail of a completion prefix, so the cursor stays); the
        template's instruction never.

        Returns:
            The prompt and what was cut, or None when even no code at all would not fit.
        """
        def size(text: str) -> int:
            return len(tokenizer(text)["input_ids"])

        prompt = self.prompt(record, tokenizer)
        if size(prompt) <= budget:
            return Fitted(prompt, False)
        has_context = bool(context_lines(record))
        if has_context:
            kept = _largest(lambda k: size(self.prompt(record, tokenizer, k)) <= budget, len(context_lines(record)))
            if kept is not None:
                return Fitted(self.prompt(record, tokenizer, kept), False, True)
        code = task(self.task_name).prompt_input(record)
        enc = tokenizer(code, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        keep_tail = task(self.task_name).KEEP_INPUT == "tail"

        def cut(k: int) -> str:  # `record` with no context and only k of its code tokens
            if k == 0:
                text = ""
            else:
                text = code[offsets[len(offsets) - k][0]:] if keep_tail else code[: offsets[k - 1][1]]
            return self.prompt({**record, "input": text}, tokenizer, 0)

        # The largest k that fits, by bisection (sizes grow with k, give or take a merge).
        kept = _largest(lambda k: size(cut(k)) <= budget, len(offsets))
        return None if kept is None else Fitted(cut(kept), True, has_context)

    def fitted_rows(
        self, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> tuple[list[dict[str, str]], dict[str, int]]:
        """Rows whose prompt + completion + EOS fit `max_length` tokens: the code is cut to make
        room (never the instruction or the target); a row whose target alone leaves no room is
        dropped and counted.

        Returns:
            The rows, and counts ``fitted`` (code cut), ``context_cut`` (context cut, all or
            some of it) and ``target_too_long`` (dropped).
        """
        rows, counts = [], {"fitted": 0, "context_cut": 0, "target_too_long": 0}
        for record in records:
            completion = self.completion(record)
            # + 1: the EOS that TRL appends to every completion.
            room = max_length - len(tokenizer(completion, add_special_tokens=False)["input_ids"]) - 1
            fitted = self.fitted_prompt(record, tokenizer, room) if room > 0 else None
            if fitted is None:
                counts["target_too_long"] += 1
                continue
            counts["fitted"] += fitted.code_cut
            counts["context_cut"] += fitted.context_cut
            rows.append({"prompt": fitted.prompt, "completion": completion})
        return rows, counts


def fitted_prompts(
    prompter: Prompter, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, budget: int
) -> tuple[list[str], list[bool], list[bool]]:
    """Each record's prompt in at most `budget` tokens of `tokenizer` (context, then code cut to
    fit, see :meth:`Prompter.fitted_prompt`; a prompt that cannot fit is kept whole), whether
    its code was cut and whether its context was."""
    prompts, cut, context_cut = [], [], []
    for record in records:
        fitted = prompter.fitted_prompt(record, tokenizer, budget)
        prompts.append(fitted.prompt if fitted else prompter.prompt(record, tokenizer))
        cut.append(bool(fitted and fitted.code_cut))
        context_cut.append(bool(fitted and fitted.context_cut))
    return prompts, cut, context_cut


def evaluation_prompts(
    sets: Mapping[str, Sequence[Mapping[str, Any]]],
    evaluations: Sequence[tuple[str, str]],
    prompter_of: Callable[[str], Prompter],
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
) -> tuple[dict[str, list[str]], dict[str, list[bool]], dict[str, list[bool]]]:
    """The prompts of every evaluation ``<set>.<template>`` (the (set, template) pairs of
    ``repotune.evalsets.evaluations``), each record's cut to `budget` tokens, and per
    evaluation which had their code cut and which their context; `prompter_of` gives the
    prompter of a template (the template itself, or for the chat baseline the task's chat
    request)."""
    prompts, cut, context_cut = {}, {}, {}
    for set_name, template in evaluations:
        key = f"{set_name}.{template}"
        prompts[key], cut[key], context_cut[key] = fitted_prompts(
            prompter_of(template), sets[set_name], tokenizer, budget
        )
    return prompts, cut, context_cut
