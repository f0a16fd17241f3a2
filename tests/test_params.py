"""params.yaml loading: defaults, unknown keys, types, ranges, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repotune import params
from repotune.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_yaml_is_valid():
    p = params.load(ROOT / "params.yaml")
    assert p.split.seed == 42
    assert p.source.url.startswith("pypi:")


def test_every_key_in_params_yaml_has_a_trailing_comment():
    for number, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if line[0] != " ":  # a section header
            continue
        assert "#" in line, f"params.yaml:{number} has no comment: {line!r}"


def test_defaults_fill_missing_sections():
    p = params.parse({"source": {"url": "."}})
    assert (p.split.train, p.split.val, p.split.test) == (0.8, 0.1, 0.1)
    assert p.task.docstring.filter.min_target_tokens == 8 and p.task.filter.min_target_tokens == 8
    assert p.task.completion.extract.window.stride == 256 and p.task.method_name.extract.mask == "<MASK>"
    assert (p.train.max_samples, p.generate.max_samples, p.split.min_test_samples) == (1000, 150, 30)


def test_all_problems_are_reported_at_once_with_key_value_and_allowed():
    with pytest.raises(ParamsError) as info:
        params.parse({
            "source": {"url": "."},
            "task": {"docstring": {"filter": {"min_target_tokens": -1}}},
            "filter": {"max_input_tokens": "400"},
            "split": {"trian": 0.8},
            "extract": {"languages": ["python", "go"]},
            "surprise": {},
        })
    lines = str(info.value).splitlines()
    assert "params.yaml: task.docstring.filter.min_target_tokens must be greater than or equal to 0, got -1" in lines
    assert "params.yaml: filter.max_input_tokens must be a valid integer, got '400'" in lines
    assert ("params.yaml: split.trian is not a known key (valid keys: by, seed, train, val, test, near_duplicates, "
            "min_test_samples)") in lines
    assert "params.yaml: extract.languages.1: must be one of the languages (python, kotlin, java), got 'go'" in lines
    assert any(line.startswith("params.yaml: surprise is not a known key (valid keys: source,") for line in lines)
    assert len(lines) == 5


def test_yaml_1_1_float_written_as_2e_minus_4_is_a_string_and_rejected():
    with pytest.raises(ParamsError, match="train.lr must be a valid number, got '2e-4'"):
        params.parse({"source": {"url": "."}, "train": {"lr": "2e-4"}})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ParamsError, match=r"split: train \+ val \+ test must sum to 1.0, got 1.1"):
        params.parse({"source": {"url": "."}, "split": {"train": 0.9, "val": 0.1, "test": 0.1}})


def test_task_and_language_params_are_checked():
    with pytest.raises(ParamsError, match=r"task.language is not a known key \(valid keys: name, docstring, "
                                          r"completion, method_name\)"):
        params.parse({"source": {"url": "."}, "task": {"language": "kotlin"}})
    with pytest.raises(ParamsError, match=r"^params.yaml: task.name: must be one of the tasks \(docstring, completion, "
                                          r"method_name\), got 'docstrings'$"):
        params.parse({"source": {"url": "."}, "task": {"name": "docstrings"}})
    with pytest.raises(ParamsError, match=r"extract.languages.0: must be one of the languages \(python, kotlin, java\), "
                                          r"got 'go'"):
        params.parse({"source": {"url": "."}, "extract": {"languages": ["go"]}})
    with pytest.raises(ParamsError, match=r"^params.yaml: extract.workers must be greater than or equal to 0, got -1$"):
        params.parse({"source": {"url": "."}, "extract": {"workers": -1}})
    with pytest.raises(ParamsError, match="languages lists a language twice"):
        params.parse({"source": {"url": "."}, "extract": {"languages": ["java", "java"]}})
    with pytest.raises(ParamsError, match="extract.languages list should have at least 1 item"):
        params.parse({"source": {"url": "."}, "extract": {"languages": []}})
    with pytest.raises(ParamsError, match="task.completion.extract.window.target must be 'tokens', 'line' or 'lines'"):
        params.parse({"source": {"url": "."}, "task": {"completion": {"extract": {"window": {"target": "word"}}}}})
    with pytest.raises(ParamsError, match=r"task.method_name.extract.mak is not a known key \(valid keys: mask, keep_doc\)"):
        params.parse({"source": {"url": "."}, "task": {"method_name": {"extract": {"mak": "x"}}}})
    with pytest.raises(ParamsError, match=r"templates.completion.bare must contain the placeholder \{code\}"):
        params.parse({"source": {"url": "."}, "prompt": {"templates": {"completion": {"bare": "x"}}}})
    p = params.parse({"source": {"url": "."}, "task": {"name": "method_name"}, "extract": {"languages": ["kotlin", "java"]}})
    assert p.task.name == "method_name" and p.extract.languages == ["kotlin", "java"]


def test_names_the_task_owns_are_checked_when_params_load(tmp_path):
    """A template or metric the task does not have stops params.load, before any stage works
    (it used to pass loading and fail at generate or evaluate, after training)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["generate"]["templates"] = ["plain", "nonexistent"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as info:
        params.load(path)
    assert str(info.value) == (
        "params.yaml: generate.templates lists 'nonexistent', not a template of task docstring "
        "(task docstring has: plain, verbose; add one under prompt.templates.docstring)"
    )
    base = {"source": {"url": "."}, "task": {"name": "method_name"}}
    with pytest.raises(ParamsError, match=r"^params.yaml: prompt.template is 'nonexistent', not a template of task "
                                          r"method_name \(task method_name has: instruct, plain; add one under "
                                          r"prompt.templates.method_name\)$"):
        params.parse({**base, "prompt": {"template": "nonexistent"}})
    # A template of another task is not one of this task's.
    with pytest.raises(ParamsError, match="prompt.template is 'verbose', not a template of task method_name"):
        params.parse({**base, "prompt": {"template": "verbose"}})
    with pytest.raises(ParamsError, match=r"evaluate.primary must be one of the method_name task's metrics "
                                          r"\(exact_match, exact_match_ci, .*\) or null, got 'rouge_l'"):
        params.parse({**base, "evaluate": {"primary": "rouge_l"}})
    with pytest.raises(ParamsError, match=r"prompt.templates.docstrng: 'docstrng' is not a task \(tasks: docstring, "
                                          r"completion, method_name\)"):
        params.parse({"source": {"url": "."}, "prompt": {"templates": {"docstrng": {"short": "{code}"}}}})
    # Every problem at once, in one message.
    with pytest.raises(ParamsError, match=r"prompt.template is 'x'.*; generate.templates lists 'y', 'z'.*; "
                                          r"evaluate.primary .* got 'w'"):
        params.parse({**base, "prompt": {"template": "x"}, "generate": {"templates": ["y", "z"]},
                      "evaluate": {"primary": "w"}})
    # Templates defined under prompt.templates for the task count, and so do the task's own.
    p = params.parse({**base, "prompt": {"template": "short", "templates": {"method_name": {"short": "{code}\nName:"}}},
                      "generate": {"templates": ["short", "instruct"]}, "evaluate": {"primary": "subtoken_f1"}})
    assert (p.prompt.template, p.generate.templates, p.evaluate.primary) == ("short", ["short", "instruct"], "subtoken_f1")


def test_task_and_language_names_come_from_the_registries(monkeypatch):
    from repotune import languages, tasks

    # The task section: name, then one sub-section per registered task, the task's own Params.
    assert list(params.TaskParams.model_fields) == ["name", *tasks.TASKS]
    for name, module in tasks.TASKS.items():
        assert params.TaskParams.model_fields[name].annotation is module.Params
    # A name is checked against the registry as it is when params load, not a list copied at import.
    monkeypatch.setitem(languages.LANGUAGES, "cobol", languages.python)
    assert params.parse({"source": {"url": "."}, "extract": {"languages": ["cobol"]}}).extract.languages == ["cobol"]


def test_a_key_that_moved_under_its_task_names_the_new_key():
    """Task knobs used to sit in the shared extract and filter sections; a params.yaml that still
    sets one is told where it went, one line per key."""
    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "extract": {"target": "full", "window": {"stride": 64}, "mask": "X"},
                      "filter": {"min_body_lines": 1, "max_literal_chars": 80, "drop_deprecated": False}})
    assert str(info.value).splitlines() == [
        "params.yaml: extract.target has moved to task.docstring.extract.target: the docstring task's own knobs are "
        "under task.docstring",
        "params.yaml: extract.window has moved to task.completion.extract.window: the completion task's own knobs are "
        "under task.completion",
        "params.yaml: extract.mask has moved to task.method_name.extract.mask: the method_name task's own knobs are "
        "under task.method_name",
        "params.yaml: filter.min_body_lines has moved to task.method_name.filter.min_body_lines: the method_name "
        "task's own knobs are under task.method_name",
        "params.yaml: filter.max_literal_chars has moved to task.completion.filter.max_literal_chars: the completion "
        "task's own knobs are under task.completion",
        "params.yaml: filter.drop_deprecated has moved to task.docstring.filter.drop_deprecated: the docstring "
        "task's own knobs are under task.docstring",
    ]
    # Every old key names a key the schema has.
    for old, new in params.MOVED.items():
        section, _, key = new.rpartition(".")
        node = params.parse({"source": {"url": "."}})
        for part in section.split("."):
            node = getattr(node, part)
        assert key in type(node).model_fields, (old, new)


def test_a_key_of_the_old_benchmark_section_names_its_new_place():
    """benchmark was named after no stage; its keys went to the sections of the stages that read
    them. One old key: one line naming its new key; the whole section: one line naming them all."""
    moved = {
        "systems": "generate.systems", "max_samples": "generate.max_samples", "templates": "generate.templates",
        "device": "generate.device", "threads": "generate.threads", "min_samples": "split.min_test_samples",
        "ood": "ood",
    }
    for old, new in moved.items():
        with pytest.raises(ParamsError) as info:
            params.parse({"source": {"url": "."}, "benchmark": {old: 1}})
        assert str(info.value) == f"params.yaml: benchmark.{old} has moved to {new}"
    everywhere = (
        "params.yaml: benchmark has moved, key by key: benchmark.systems to generate.systems, benchmark.max_samples "
        "to generate.max_samples, benchmark.templates to generate.templates, benchmark.device to generate.device, "
        "benchmark.threads to generate.threads, benchmark.min_samples to split.min_test_samples, benchmark.ood to ood"
    )
    # A params.yaml written before the move: its whole benchmark section, one line; other
    # problems still get their own.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["benchmark"] = {"max_samples": 150, "min_samples": 30, "ood": raw.pop("ood"), **raw.pop("generate")}
    raw["train"]["lr"] = -1.0
    with pytest.raises(ParamsError) as info:
        params.parse(raw)
    assert str(info.value).splitlines() == ["params.yaml: train.lr must be greater than 0, got -1.0", everywhere]
    # An empty or null section, or a key it never had: where every key went.
    for section in (None, {}, {"max_sample": 10}):
        with pytest.raises(ParamsError) as info:
            params.parse({"source": {"url": "."}, "benchmark": section})
        assert str(info.value) == everywhere
    # Every new key is a key of the schema.
    p = params.parse({"source": {"url": "."}, "ood": {}})
    for new in params.MOVED_SECTIONS["benchmark"].values():
        section, _, key = new.rpartition(".")
        owner = getattr(p, section) if section else p
        assert key in type(owner).model_fields, new


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping of sections"):
        params.load(bad)


def test_a_key_written_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("source:\n  url: x\ntrain:\n  lr: 1.0e-4\n  lr: 2.0e-4\n")
    with pytest.raises(ParamsError, match=r"^params.yaml: line 5: key 'lr' is written twice \(first on line 4\)$"):
        params.load(path)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_floats_must_be_finite(value):
    with pytest.raises(ParamsError, match="train.lr must be a finite number"):
        params.parse({"source": {"url": "."}, "train": {"lr": value}})


def test_sha256_is_accepted_in_either_case_and_kept_lowercase():
    p = params.parse({"source": {"url": "."}, "model": {"base": "pypi:a==1", "file": "a.gguf", "sha256": "AB" * 32}})
    assert p.model.sha256 == "ab" * 32


def test_params_yaml_writes_out_the_schema_defaults():
    """One default per knob: params.yaml holds exactly the schema's defaults (plus the
    corpora and model it chooses: source, model, ood), so a key missing from a user's
    params.yaml means the same."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    written = params.parse(raw)
    defaults = params.Params(source=written.source, model=written.model, ood=written.ood)
    assert written == defaults
    assert params.Params(source=written.source).ood is None  # no out-of-domain download unless asked


def test_extract_exclude_tests_is_a_switch_and_exclude_lists_no_test_layout():
    p = params.parse({"source": {"url": "."}})
    assert p.extract.exclude_tests is True
    # Tests are each language's own patterns (repotune.languages), not generic excludes.
    assert p.extract.exclude == [
        "docs/", "doc/", "examples/", "example/", "benchmarks/", "_vendor/", "vendor/", "vendored/",
        "third_party/", "setup.py",
    ]
    assert params.parse({"source": {"url": "."}, "extract": {"exclude_tests": False}}).extract.exclude_tests is False
    with pytest.raises(ParamsError, match=r"^params.yaml: extract.exclude_tests must be a valid boolean, got 'yes'$"):
        params.parse({"source": {"url": "."}, "extract": {"exclude_tests": "yes"}})


def test_ood_sources_are_keyed_by_known_languages():
    ok = params.parse({"source": {"url": "."}, "ood": {"sources": {"kotlin": {"url": "npm:a@1.0.0"}}}})
    assert ok.ood.sources["kotlin"] == params.SourceParams(url="npm:a@1.0.0", rev="HEAD", submodules=False)
    assert ok.ood.max_samples == 100
    bad = {"sources": {"rust": {"url": "x"}, "kotlin": {"url": "y", "branch": "main"}, "go": {"url": "z"}}}
    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "ood": bad})
    assert str(info.value).splitlines() == [
        "params.yaml: ood.sources: 'rust' is not a language (keys must be one of python, kotlin, java)",
        "params.yaml: ood.sources.kotlin.branch is not a known key (valid keys: url, rev, submodules)",
        "params.yaml: ood.sources: 'go' is not a language (keys must be one of python, kotlin, java)",
    ]
    # The one-source form of earlier versions names the keys that replace it.
    with pytest.raises(ParamsError, match=r"^params.yaml: ood.url is not a known key \(valid keys: sources, max_samples\)$"):
        params.parse({"source": {"url": "."}, "ood": {"url": "pypi:jinja2==3.1.6"}})


def test_generate_systems_are_a_named_mapping_with_defaults_per_system():
    p = params.parse({"source": {"url": "."}})
    assert list(p.generate.systems) == ["base", "base_chat", "finetuned", "base_prefix", "base_rag", "finetuned_rag"]
    assert p.generate.systems["base_chat"] == params.SystemParams(model="models/base", context="none", prompt="chat")
    beams = {"docstring": params.DecodingOverride(num_beams=4, length_penalty=1.5)}
    assert p.generate.systems["finetuned_rag"] == params.SystemParams(
        model="models/merged_rag", context="retrieval", prompt="trained", enabled="with_retrieval", decoding=beams)
    # The fine-tuned systems decode docstrings with beams of their own; the base ones as `decoding` says.
    assert p.generate.systems["finetuned"].decoding == beams and p.generate.systems["base"].decoding == {}
    two = params.parse({"source": {"url": "."}, "generate": {"systems": {
        "finetuned": {"model": "models/merged"}, "base2": {"model": "models/base", "prompt": "trained"}}}})
    assert list(two.generate.systems) == ["finetuned", "base2"]  # the order written, the report's
    assert two.generate.systems["finetuned"] == params.SystemParams(model="models/merged", context="none", prompt="trained")


def test_generate_systems_problems_name_the_key():
    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "generate": {"systems": {
            "Big-One": {"model": "base", "prompt": "fancy", "seed": 1},
            "odd": {"model": "models/merged", "context": "graph"},
            "plain": {"model": "models/base", "enabled": "with_retrieval"},
        }}})
    assert str(info.value).splitlines() == [
        "params.yaml: generate.systems: 'Big-One' is not a system name: lowercase letters, digits and _, starting "
        "with a letter (it names the stage generate@Big-One and the folder data/generations/Big-One), and not best_base",
        "params.yaml: generate.systems.Big-One.model: must be a model folder a stage makes: models/base (the base "
        "model), models/merged (the fine-tuned model), models/merged_rag (fine-tuned with retrieved context; needs "
        "retrieval.enabled) or data/distill/model (the distill teacher), got 'base'",
        "params.yaml: generate.systems.Big-One.prompt must be 'trained' or 'chat', got 'fancy'",
        "params.yaml: generate.systems.Big-One.seed is not a known key (valid keys: model, context, prompt, enabled, "
        "decoding)",
        "params.yaml: generate.systems.odd.context must be 'none', 'retrieval' or 'prefix', got 'graph'",
        "params.yaml: generate.systems.plain: enabled is with_retrieval, but the system needs nothing retrieval "
        "makes (context none, model models/base): use true or false",
    ]
    with pytest.raises(ParamsError, match=r"^params.yaml: generate.systems.x.model is required$"):
        params.parse({"source": {"url": "."}, "generate": {"systems": {"x": {"prompt": "chat"}}}})


def test_a_system_decodes_a_task_with_keys_of_its_own_and_the_rest_from_decoding():
    tuned = {"model": "models/merged", "decoding": {"docstring": {"num_beams": 4, "length_penalty": 1.5}}}
    p = params.parse({"source": {"url": "."}, "decoding": {"max_new_tokens": 40, "num_beams": 2},
                      "generate": {"systems": {"base": {"model": "models/base"}, "tuned": tuned}}})
    tuned_params, base = p.generate.systems["tuned"], p.generate.systems["base"]
    docstring = tuned_params.decoding_for(p.decoding, "docstring")
    assert (docstring.num_beams, docstring.length_penalty, docstring.max_new_tokens) == (4, 1.5, 40)
    # Another task, or a system with no keys of its own: decoding as it is.
    assert tuned_params.decoding_for(p.decoding, "completion") == p.decoding == base.decoding_for(p.decoding, "docstring")
    # A key left null keeps decoding's (the task's default stays reachable through decoding).
    assert tuned_params.decoding["docstring"].no_repeat_ngram_size is None
    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "generate": {"systems": {"tuned": {
            "model": "models/merged", "decoding": {"docstring": {"num_beams": 0, "beams": 2}}}}}})
    assert str(info.value).splitlines() == [
        "params.yaml: generate.systems.tuned.decoding.docstring.num_beams must be greater than 0, got 0",
        "params.yaml: generate.systems.tuned.decoding.docstring.beams is not a known key (valid keys: "
        "max_new_tokens, do_sample, temperature, top_p, num_beams, length_penalty, repetition_penalty, "
        "no_repeat_ngram_size, markup_guard, batch_size, stop, seed)",
    ]
    with pytest.raises(ParamsError, match=r"^params.yaml: generate.systems.tuned.decoding.poetry: 'poetry' is not a "
                                          r"task \(tasks: docstring, completion, method_name\)$"):
        params.parse({"source": {"url": "."}, "generate": {"systems": {"base": {"model": "models/base"}, "tuned": {
            "model": "models/merged", "decoding": {"poetry": {"num_beams": 2}}}}}})


def test_a_system_that_needs_retrieval_runs_with_retrieval_enabled_or_says_with_retrieval():
    systems = {"base": {"model": "models/base"}, "base_rag": {"model": "models/base", "context": "retrieval"},
               "base_prefix": {"model": "models/base", "context": "prefix"},
               "tuned_rag": {"model": "models/merged_rag"}}
    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "generate": {"systems": systems}})
    assert str(info.value).splitlines() == [
        "params.yaml: generate.systems.base_rag: its context is retrieval, which needs retrieval.enabled: true (or "
        "set generate.systems.base_rag.enabled: with_retrieval to run it only then); generate.systems.base_prefix: "
        "its context is prefix, which needs retrieval.enabled: true (or set generate.systems.base_prefix.enabled: "
        "with_retrieval to run it only then); generate.systems.tuned_rag: its model is models/merged_rag, the adapter "
        "trained with retrieved context, which needs retrieval.enabled: true (or set "
        "generate.systems.tuned_rag.enabled: with_retrieval to run it only then)",
    ]
    on = params.parse({"source": {"url": "."}, "generate": {"systems": systems}, "retrieval": {"enabled": True}})
    assert on.generate.systems["tuned_rag"].needs_retrieval and not on.generate.systems["base"].needs_retrieval
    # The defaults list the retrieval systems guarded: valid with retrieval off, run with it on.
    guarded = {name: {**s, "enabled": "with_retrieval"} if name != "base" else s for name, s in systems.items()}
    assert params.parse({"source": {"url": "."}, "generate": {"systems": guarded}}).generate.systems["base_rag"].enabled \
        == "with_retrieval"
    off = {name: {**s, "enabled": False} for name, s in systems.items()}
    params.parse({"source": {"url": "."}, "generate": {"systems": off}})  # not run: nothing needed


def test_the_reference_must_be_a_listed_system_or_best_base_with_a_base_system():
    systems = {"tuned": {"model": "models/merged"}, "plain": {"model": "models/base"}}
    with pytest.raises(ParamsError, match=r"^params.yaml: evaluate.reference is 'base', not best_base nor one of "
                                          r"generate.systems \(tuned, plain\)$"):
        params.parse({"source": {"url": "."}, "generate": {"systems": systems}, "evaluate": {"reference": "base"}})
    assert params.parse({"source": {"url": "."}, "generate": {"systems": systems},
                         "evaluate": {"reference": "tuned"}}).evaluate.reference == "tuned"
    with pytest.raises(ParamsError, match=r"^params.yaml: evaluate.reference is best_base but no system of "
                                          r"generate.systems runs models/base with context none$"):
        params.parse({"source": {"url": "."}, "generate": {"systems": {"tuned": {"model": "models/merged"}}}})
