"""Prompts and completions: the one place that decides what the model sees and must write.

Training (`train`), the merge check (`merge`) and evaluation (`benchmark`) all build prompts
with a :class:`Prompter`, so the model is scored on exactly the text layout it was trained on.
A template is named (``prompt.template``) and comes from ``prompt.templates.<task>.<name>`` in
params.yaml or else from the task's own defaults (``PROMPTS`` of its module); ``{code}`` is the
task's prompt input. With ``prompt.chat_template`` the filled template is the user turn of the
tokenizer's chat template (after ``prompt.system``, if any), rendered with the generation
prompt; otherwise it is used as plain text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repotune.errors import RepotuneError
from repotune.tasks import task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.params import PromptParams

PLACEHOLDER = "{code}"


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

    def prompt(self, record: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """The prompt of `record`, ending where the model's completion starts.

        ``str.replace`` rather than ``str.format``: code is full of braces that ``format``
        would try to interpret.
        """
        text = self.template.replace(PLACEHOLDER, task(self.task_name).prompt_input(record))
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
    ) -> tuple[str, bool] | None:
        """The prompt of `record` in at most `budget` tokens (the tokenizer's special tokens
        included): the code is cut on a token boundary (the task's ``KEEP_INPUT`` end kept:
        the head of a definition, the tail of a completion prefix, so the cursor stays), the
        template's instruction never.

        Returns:
            (prompt, whether the code was cut), or None when even no code at all would not fit.
        """
        def size(text: str) -> int:
            return len(tokenizer(text)["input_ids"])

        prompt = self.prompt(record, tokenizer)
        if size(prompt) <= budget:
            return prompt, False
        code = task(self.task_name).prompt_input(record)
        enc = tokenizer(code, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        keep_tail = task(self.task_name).KEEP_INPUT == "tail"

        def cut(k: int) -> str:  # `record` with only k of its code tokens
            if k == 0:
                text = ""
            else:
                text = code[offsets[len(offsets) - k][0]:] if keep_tail else code[: offsets[k - 1][1]]
            return self.prompt({**record, "input": text}, tokenizer)

        # The largest k that fits, by bisection (sizes grow with k, give or take a merge).
        low, high = 0, len(offsets)
        if size(cut(0)) > budget:
            return None
        while low < high:
            mid = (low + high + 1) // 2
            if size(cut(mid)) <= budget:
                low = mid
            else:
                high = mid - 1
        return cut(low), True

    def fitted_rows(
        self, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> tuple[list[dict[str, str]], dict[str, int]]:
        """Rows whose prompt + completion + EOS fit `max_length` tokens: the code is cut to make
        room (never the instruction or the target); a row whose target alone leaves no room is
        dropped and counted.

        Returns:
            The rows, and counts ``fitted`` (code cut) and ``target_too_long`` (dropped).
        """
        rows, counts = [], {"fitted": 0, "target_too_long": 0}
        for record in records:
            completion = self.completion(record)
            # + 1: the EOS that TRL appends to every completion.
            room = max_length - len(tokenizer(completion, add_special_tokens=False)["input_ids"]) - 1
            fitted = self.fitted_prompt(record, tokenizer, room) if room > 0 else None
            if fitted is None:
                counts["target_too_long"] += 1
                continue
            counts["fitted"] += fitted[1]
            rows.append({"prompt": fitted[0], "completion": completion})
        return rows, counts


def fitted_prompts(
    prompter: Prompter, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, budget: int
) -> tuple[list[str], list[bool]]:
    """Each record's prompt in at most `budget` tokens of `tokenizer` (code cut to fit, see
    :meth:`Prompter.fitted_prompt`; a prompt that cannot fit is kept whole), and whether its
    code was cut."""
    prompts, cut = [], []
    for record in records:
        fitted = prompter.fitted_prompt(record, tokenizer, budget)
        prompts.append(fitted[0] if fitted else prompter.prompt(record, tokenizer))
        cut.append(bool(fitted and fitted[1]))
    return prompts, cut


def evaluation_prompts(
    sets: Mapping[str, Sequence[Mapping[str, Any]]],
    evaluations: Sequence[tuple[str, str]],
    prompter_of: Callable[[str], Prompter],
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
) -> tuple[dict[str, list[str]], dict[str, list[bool]]]:
    """The prompts of every evaluation ``<set>.<template>`` (the (set, template) pairs of
    ``repotune.evalsets.evaluations``), each record's cut to `budget` tokens, and the cuts;
    `prompter_of` gives the prompter of a template (the template itself, or for the chat
    baseline the task's chat request)."""
    prompts, cut = {}, {}
    for set_name, template in evaluations:
        key = f"{set_name}.{template}"
        prompts[key], cut[key] = fitted_prompts(prompter_of(template), sets[set_name], tokenizer, budget)
    return prompts, cut
