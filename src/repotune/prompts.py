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

from collections.abc import Mapping, Sequence
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
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise RepotuneError(
                "prompt.chat_template is true but the base model's tokenizer has no chat template"
            )
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": text}
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The tokenizer adds its BOS itself when the prompt is tokenised; a template that
        # writes it too would give two.
        bos = tokenizer.bos_token
        if bos and rendered.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
            rendered = rendered[len(bos):]
        return rendered

    def completion(self, record: Mapping[str, Any]) -> str:
        """The text the model is trained to write after the prompt (TRL appends EOS)."""
        text = task(self.task_name).completion(record)
        return text.strip() if self.chat_template else text

    def rows(
        self, records: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase | None = None
    ) -> list[dict[str, str]]:
        """Prompt/completion rows in TRL's prompt-completion format."""
        return [{"prompt": self.prompt(r, tokenizer), "completion": self.completion(r)} for r in records]
