"""Does torch's CPU thread count change fp32 results? (why `*.threads` are not stage params)

Loads a model folder twice, with 1 and with 2 torch threads, and compares bit for bit: the loss
and every parameter's gradient of one forward/backward pass over a 2 x 384-token batch, and 24
greedily generated tokens from 200-token prompts; then the train stage's own path, a LoRA
adapter on the base with its frozen linears pre-packed for oneDNN (``train.prepack_frozen``):
the loss and the LoRA gradients.

    python bench/threads_determinism.py [--model models/base]

Measured on the default base (SmolLM2-135M, fp32) on the AMD EPYC (AVX2) machine: loss
13.576898574829102 and gradient sha256 7a40b96f352d... with both thread counts; the same
generated tokens. The pre-packed LoRA path on the AMD EPYC with AVX-512 (2026-12-07): loss
14.382028579711914 and LoRA gradient sha256 383d36d925c5... with both thread counts (the plain
path gave the AVX2 machine's numbers above there too). Re-run it on another CPU kind before
trusting the same there.
"""

from __future__ import annotations

import argparse
import hashlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/base")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    ids = torch.randint(0, 49000, (2, 384))
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        model.train()
        torch.manual_seed(1)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = gradient_digest(model)
        model.eval()
        with torch.no_grad():
            tokens = model.generate(ids[:, :200], attention_mask=torch.ones_like(ids[:, :200]),
                                    max_new_tokens=24, do_sample=False)[:, 200:].tolist()
        results[threads] = (loss.item(), grads, tokens)
        print(f"threads {threads}: loss {loss.item()!r}, gradients sha256 {grads}")
    same = [results[1][i] == results[2][i] for i in range(3)]
    print(f"same loss: {same[0]}, same gradients: {same[1]}, same generated tokens: {same[2]}")
    packed = {threads: lora_step(args.model, ids, threads) for threads in (1, 2)}
    print(f"LoRA, frozen linears pre-packed: same loss: {packed[1][0] == packed[2][0]}, "
          f"same LoRA gradients: {packed[1][1] == packed[2][1]}")


def gradient_digest(model) -> str:
    """sha256 of every trainable parameter's gradient, in parameter-name order."""
    grads = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            grads.update(p.grad.numpy().tobytes())
    return grads.hexdigest()


def lora_step(model_path: str, ids, threads: int) -> tuple[float, str]:
    """The train stage's path: a LoRA adapter (params.yaml's default targets) on the base with
    its frozen linears pre-packed for oneDNN (``train.prepack_frozen``), one forward/backward
    pass in eval mode (no dropout); the loss and the LoRA gradients' sha256."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from repotune.modeling import prepack_frozen_linears

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
        LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                   init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    prepack_frozen_linears(model)
    model.eval()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = gradient_digest(model)
    print(f"threads {threads}, LoRA on pre-packed linears: loss {loss.item()!r}, LoRA gradients sha256 {grads}")
    return loss.item(), grads


if __name__ == "__main__":
    main()
