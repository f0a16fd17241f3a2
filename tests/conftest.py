"""Shared fixtures: offline environment, a tiny causal LM built from a config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Nothing in the tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVCLIVE_OPEN", "false")

TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "Docstring: Return the sum of two numbers.\n",
    "Docstring: Push an item onto the stack.\n",
    "import os\nfrom pathlib import Path\n\ndef read(path):\n    return Path(path).read_text()\n",
] * 20


def build_tiny_model(
    folder: Path, hidden_size: int = 32, layers: int = 2, vocab_size: int = 300, seed: int = 0
) -> Path:
    """Save a `layers`-layer Llama (hidden `hidden_size`) with a byte-level BPE tokenizer trained here.

    Nothing is downloaded: the tokenizer is trained on a few lines of code and the model
    weights are random (seeded), which is all the train/merge/benchmark mechanics need. The
    same `vocab_size` gives the same tokenizer (training is deterministic), so models of
    different sizes can share one (a teacher and its student); another size gives another.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_CORPUS, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HF model folder (safetensors + tokenizer), built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


# ---------------------------------------------------------------------------------------------
# A real git repository with real-looking Python code, plus the broken files a crawler meets.

GEOMETRY_PY = '''\
"""Geometry helpers."""
import functools


def area(width, height):
    """Return the area of a rectangle whose sides are width and height, in square units of the inputs."""
    return width * height


@functools.lru_cache(maxsize=None)
@staticmethod
def perimeter(width, height):
    """Return the perimeter of a rectangle.

    Both sides must be non-negative numbers; the result has the unit of the inputs.
    """
    # a comment that stays
    return 2 * (width + height)


async def fetch_shape(client, name):
    r"""Fetch the shape called name from the client and parse it with a regex like \\d+ into numbers."""
    data = await client.get(name)
    return data


def no_docstring(x):
    return x + 1


def byte_doc():
    b"""Byte strings are not docstrings: Python leaves __doc__ as None."""
    return 1


def only_doc():
    """Do nothing at all, but explain at length why nothing needs to be done here today."""


def one_liner(): """Return None without looking at anything, which is all this one-liner does."""


class Shape:
    """A shape in the plane, described by its vertices in counter-clockwise order."""

    sides = 0

    def __init__(self, vertices):
        """Create a shape from a list of (x, y) vertices given in counter-clockwise order."""
        self.vertices = vertices

    def __repr__(self):
        """Return a developer-friendly representation listing the vertices of the shape."""
        return f"Shape({self.vertices!r})"

    @property
    def count(self):
        """The number of vertices of this shape, which is also its number of sides."""
        return len(self.vertices)

    def scaled(self, factor):
        """Return a copy scaled by factor about the origin, keeping the vertex order intact."""

        def scale(point):
            """Scale one point by the enclosing factor and return the new (x, y) tuple."""
            return (point[0] * factor, point[1] * factor)

        return Shape([scale(p) for p in self.vertices])

    async def render(self, canvas):
        """Draw the shape on the canvas asynchronously and wait until the canvas is done."""
        await canvas.draw(self.vertices)

    def test_like_method(self):
        """A method named like a test, which the filter drops when tests are excluded."""
        return True
'''

FIXTURE_FILES: dict[str, bytes] = {
    "pkg/__init__.py": b'"""The package."""\n',
    "pkg/geometry.py": GEOMETRY_PY.encode(),
    "pkg/copy_of_area.py": (
        b'def area(width, height):\n'
        b'    """Return the area of a rectangle whose sides are width and height, in square units of the inputs."""\n'
        b'    return width * height\n'
    ),
    "pkg/broken.py": b'def broken(:\n    """A docstring in a file that does not parse at all, so it is skipped."""\n',
    "pkg/latin1.py": 'def caf\xe9():\n    """Caf\xe9 docstring in a Latin-1 file that is not valid UTF-8 at all."""\n'.encode("latin-1"),
    "pkg/binary.py": b"\x00\x01\x02binary\x00" * 10,
    "pkg/huge.py": b"x = [" + b"1, " * 400_000 + b"]\n",
    "tests/test_geometry.py": b'def test_area():\n    """Check the area of a unit square, which must be one square unit."""\n    assert True\n',
    "README.md": b"# fixture\n",
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    """Write `files` (path relative to `root` -> text or bytes) under `root`, making folders."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")


def git_repo(path: Path, files: dict[str, str]):
    """A git repository at `path` with `files` (relative path -> text) in one commit on main."""
    import git

    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    write_tree(path, files)
    repo.git.add("--all")
    repo.index.commit("code")
    return repo


def _section(raw: dict, name: str) -> dict:
    """The mapping at dotted `name` of `raw` (``task.docstring.filter``), made where missing
    (or null)."""
    for part in name.split("."):
        if raw.get(part) is None:
            raw[part] = {}
        raw = raw[part]
    return raw


def _update(raw: dict, name: str, values: dict | None) -> None:
    """Update the section at dotted `name` of `raw` key by key; None sets it to null
    (``ood=None``: no out-of-domain check)."""
    if values is None:
        head, _, last = name.rpartition(".")
        (_section(raw, head) if head else raw)[last] = None
    else:
        _section(raw, name).update(values)


def write_params(root: Path, **sections: dict) -> Path:
    """params.yaml under `root` for in-process stage tests: a source, CPU with one thread, two
    systems (base and finetuned: no chat baseline), short decoding with no stops, few
    resamples; each section given updates those keys (a dotted name updates a nested section:
    ``**{"task.docstring.filter": {...}}``)."""
    raw: dict = {
        "source": {"url": "https://example.com/r.git"},
        "generate": {"device": "cpu", "threads": 1,
                      "systems": {"base": {"model": "models/base"}, "finetuned": {"model": "models/merged"}}},
        "decoding": {"max_new_tokens": 6, "batch_size": 2, "stop": []},
        "evaluate": {"resamples": 200},
    }
    for name, values in sections.items():
        _update(raw, name, values)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")  # generate.systems keeps its order
    return path


def make_source_repo(path: Path, outside: Path | None = None):
    """Create a git repo at `path`: two commits, tag v1 on the first, branch `feature`.

    The second commit (HEAD of main) holds FIXTURE_FILES plus a symlink pointing outside the
    repository (to `outside`, when given). Returns the gitpython Repo.
    """
    import git

    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    (path / "pkg").mkdir(parents=True)
    (path / "pkg/__init__.py").write_bytes(FIXTURE_FILES["pkg/__init__.py"])
    repo.index.add(["pkg/__init__.py"])
    repo.index.commit("first")
    repo.create_tag("v1")
    for rel, data in FIXTURE_FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    if outside is not None:
        (path / "pkg/outside.py").symlink_to(outside)
    repo.git.add("--all")
    repo.index.commit("second")
    repo.create_head("feature", "HEAD~1")
    return repo


@pytest.fixture
def source_repo(tmp_path: Path):
    outside = tmp_path / "outside.py"
    outside.write_text('def secret():\n    """A file outside the repository that must never be read."""\n')
    return make_source_repo(tmp_path / "source", outside=outside)


@pytest.fixture(scope="session")
def one_thread():
    """One torch thread: the tiny model's ops take microseconds, and two threads spin-waiting on
    a shared 2-core machine made these tests 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lively_model(tiny_model, tmp_path_factory, one_thread) -> Path:
    """The tiny model with larger random weights (std 0.2), saved to its own folder.

    With the fixture's small init every prompt yields the same token over and over, which
    would let a batching or ordering bug pass unnoticed; here outputs depend on the prompt.
    """
    import torch

    from repotune.modeling import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("lively") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_stage(name: str):
    """The module of stages/<name>.py, to call its ``main([...])`` in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"stage_{name}", Path(__file__).resolve().parents[1] / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- a copy of the project run with real `dvc` commands (pipeline and hostile tests) ----------

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = ["base", "clone", "extract", "filter", "judge", "split", "distill", "ood", "retrieve", "train", "merge",
              "train_rag", "merge_rag", "generate@base", "generate@base_chat", "generate@finetuned",
              "generate@base_prefix", "generate@base_rag", "generate@finetuned_rag", "evaluate"]


# Settings that cannot change any stage's output bytes (speed and bookkeeping). No stage
# declares them in dvc.yaml, so changing one re-runs nothing: test_dvc_deps.py keeps them out
# of every stage's params, test_pipeline_dvc.py changes each and finds `dvc status` clean.
# Each entry says why the bytes cannot change.
SPEED_KEYS = {
    "extract.workers": "files are parsed in parallel and their records come back in file order "
                       "(test_stages_data.py: the same bytes with 1 and 2 workers)",
    "train.threads": "torch CPU threads: the default base's fp32 loss, every gradient and 24 greedy "
                     "tokens are bit-identical with 1 and 2 threads (bench/threads_determinism.py, "
                     "AMD EPYC AVX2); on a GPU they are not used",
    "train.save_steps": "checkpoints are only read by a resumed run, which ends in the bytes of an "
                        "uninterrupted one; curves are logged every min(10, eval_steps) steps, not "
                        "at checkpoints (checkpoints round up to that interval)",
    "judge.threads": "torch CPU threads, as train.threads",
    "distill.threads": "torch CPU threads, as train.threads",
    "generate.threads": "torch CPU threads, as train.threads",
}


def dvc_env() -> dict[str, str]:
    """The environment a `dvc` subprocess runs stages in: this venv's python first on PATH."""
    import sys

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1"}


def project_copy(dest: Path):
    """Copy the project's tracked files (not data/, models/) into `dest` as a fresh git repo."""
    import shutil
    import subprocess

    import git

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in tracked.stdout.splitlines():
        if rel == "dvc.lock" or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    return repo


def dvc(cwd: Path, *args: str) -> str:
    """Run `dvc ARGS` in `cwd`; fail the test with its output unless it exits 0."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=dvc_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def set_params(project: Path, **sections: dict) -> None:
    """Update sections of the project's params.yaml (key by key; a dotted name updates a nested
    section: ``**{"task.docstring.filter": {"drop_private": True}}``)."""
    import yaml

    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        _update(raw, section, values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# A budget that makes the model stages take seconds on the tiny model.
TINY_BUDGET = {
    "train": {"max_steps": 3, "batch_size": 2, "eval_steps": 2, "max_length": 128, "max_samples": 8},
    "generate": {"max_samples": 3},
    "ood": None,
    "evaluate": {"resamples": 200},
    "decoding": {"max_new_tokens": 8, "batch_size": 2},
}


def ran(output: str) -> list[str]:
    """The stages `dvc repro` ran, in pipeline order; a generate@ stage of a system beyond the
    default ones (generate@teacher, a system added in params) comes before evaluate, by name."""
    import re

    found = set(re.findall(r"Running stage '([^']+)'", output))
    order = ALL_STAGES[:-1] + sorted(found - set(ALL_STAGES)) + ALL_STAGES[-1:]
    return [s for s in order if s in found]


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    source = make_source_repo(tmp_path / "source")
    project = tmp_path / "project"
    repo = project_copy(project)
    # extract depends on models/base (completion windows are cut on its tokenizer's tokens).
    set_params(
        project,
        source={"url": source.working_dir, "rev": "main"},
        **{"task.docstring.filter": {"min_target_tokens": 10}},
        model={"base": str(tiny_model), "file": None, "sha256": None},
        # Ten samples, nine of them in one file: whole files cannot give every split some,
        # so split per sample here (tests of the file grouping are in test_filter_split.py).
        # A dozen samples: too few to mean anything, on purpose (min_test_samples 0).
        split={"by": "sample", "train": 0.4, "val": 0.3, "test": 0.3, "min_test_samples": 0},
        ood=None,  # no out-of-domain download
    )
    repo.git.add("--all")
    repo.index.commit("project")
    return project


def kill_at_checkpoint(
    argv: list[str], checkpoints_root: Path, step: int, cwd: Path | None = None, env: dict | None = None,
    spare_launcher: bool = False,
) -> int:
    """Run `argv` and SIGKILL it and every process it started once a complete training
    checkpoint (one with its marker) at or past `step` exists under `checkpoints_root`;
    return the step of the last complete checkpoint once everything is dead. With
    `spare_launcher`, only the processes `argv` started are killed and `argv` itself (e.g.
    `dvc repro`, whose own lock file a SIGKILL can leave half-written) sees its stage crash
    and exits on its own. Fails when the run ends first."""
    import contextlib
    import signal
    import subprocess
    import time

    import psutil

    from repotune.checkpoints import COMPLETE

    def complete() -> list[int]:
        # The run writes and removes scratch folders (`.NAME.partial-*`) beside the checkpoints;
        # one can vanish between the glob's listing and its look inside: look again next poll.
        try:
            return [int(p.parent.name.split("-")[1]) for p in checkpoints_root.glob(f"*/checkpoint-*/{COMPLETE}")]
        except FileNotFoundError:
            return []

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            done = complete()
            if done and max(done) >= step:
                with contextlib.suppress(psutil.NoSuchProcess):
                    launcher = psutil.Process(proc.pid)
                    targets = [*launcher.children(recursive=True), *([] if spare_launcher else [launcher])]
                    for process in targets:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            process.send_signal(signal.SIGKILL)
                proc.wait(timeout=120)
                return max(complete())  # a checkpoint may have completed between the look and the kill
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
    raise AssertionError(f"the run ended before a checkpoint at step {step}: {proc.stderr.read()}")


# --- PNG checks (plots rendered offline) --------------------------------------------------------

def png_rows(path: Path) -> list[bytes]:
    """The pixel rows of an 8-bit RGB/RGBA PNG, unfiltered (stdlib only)."""
    import zlib

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[9] in (2, 6), "8-bit RGB or RGBA expected"
            channels = 3 if body[9] == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, previous = zlib.decompress(idat), width * channels, [], bytes(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return rows


def assert_not_blank(path: Path) -> None:
    """Wider than 200 px, and more than 2% of its pixels differ from the background colour."""
    rows = png_rows(path)
    width = len(rows[0]) // 4 if len(rows[0]) % 4 == 0 else len(rows[0]) // 3
    assert width > 200 and len(rows) > 150, (width, len(rows))
    size = len(rows[0]) // width
    pixels = [row[i : i + size] for row in rows[::4] for i in range(0, len(row), size * 4)]
    background = max(set(pixels), key=pixels.count)
    drawn = sum(p != background for p in pixels) / len(pixels)
    assert drawn > 0.02, f"{path}: {drawn:.1%} of pixels drawn, looks blank"
    assert len(set(pixels)) > 8, f"{path}: {len(set(pixels))} colours"
