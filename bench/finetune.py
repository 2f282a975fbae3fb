"""Fine-tuning speed and memory: training samples/s and peak memory per method (LoRA, full) and
batch size, beside a forward pass over the same batches without gradients.

Each row runs in its own process (peak memory is a process's own), through the training step
``tracklens finetune`` runs (:class:`~tracklens.pipeline.finetune.train.Trainer`: the same
encoder, forward, loss, AdamW step). Random models of real shapes are built in memory with the
real model and processor classes (nothing downloaded); every row is a face (112 x 112) and a
body (128 x 256) crop with all three labels. Rows of ``--out`` (a JSON list):

    shape, family, method, batch, samples_per_s, forward_samples_per_s, ratio (training step
    time over the forward's), answer_tokens, prompt_tokens, trainable_params, params,
    peak_rss_mib, peak_gpu_gib, device, dtype, torch, transformers, peft

On a CPU (as ``make bench`` runs it) the families' tiny shapes; on a GPU (``--shapes 7b``):
LoRA on LLaVA-1.5-7B and Qwen2.5-VL-7B in bf16 with gradient checkpointing, and full
fine-tuning of a 2B-shaped LLaVA (a 7B's full fine-tuning with AdamW needs ~16 bytes per
parameter, beyond one 141 GB GPU).

    python bench/finetune.py --out bench/results/finetune.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mllm_gpu import SHAPES, _crops, _importable  # noqa: E402

#: (shape name, family, shape dict, methods) per device kind
TINY = [("llava-tiny", "llava", {"image_size": 56}, ("lora", "full")), ("qwen2.5-vl-tiny", "qwen2_5_vl", {}, ("lora", "full"))]
GPU = [
    ("llava-1.5-7b", *SHAPES["llava-1.5-7b"], ("lora",)),
    ("qwen2.5-vl-7b", *SHAPES["qwen2.5-vl-7b"], ("lora",)),
    ("llava-2b", "llava", {**SHAPES["llava-1.5-7b"][1], "text": {**SHAPES["llava-1.5-7b"][1]["text"], "hidden_size": 2048,
                                                                  "intermediate_size": 5632, "num_hidden_layers": 22,
                                                                  "num_attention_heads": 16, "num_key_value_heads": 16}},
     ("lora", "full")),
]  # fmt: skip


def one(spec: dict) -> dict:
    """One row, in this process."""
    import torch
    import transformers
    from tracklens.pipeline.config import FinetuneConfig, TransformersBackendConfig
    from tracklens.pipeline.estimators.mllm.prompts import load_prompt
    from tracklens.pipeline.estimators.mllm.tiny_families import family_parts
    from tracklens.pipeline.estimators.mllm.transformers_backend import image_options
    from tracklens.pipeline.finetune.data import Encoder, Example
    from tracklens.pipeline.finetune.train import Trainer, prepare_model

    device = torch.device(spec["device"])
    dtype = torch.bfloat16 if device.type == "cuda" and spec["method"] == "lora" else torch.float32
    parts = family_parts(spec["family"], spec["shape"])
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = parts.model()
    finally:
        torch.set_default_dtype(default)
    params = sum(p.numel() for p in model.parameters())
    cfg = FinetuneConfig(method=spec["method"], batch_size=spec["batch"], max_steps=10_000, checkpoint_every=10_000,
                         learning_rate=1e-5, gradient_checkpointing=device.type == "cuda")  # fmt: skip
    torch.manual_seed(0)
    prepare_model(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backend = TransformersBackendConfig(model=spec["name"], device=str(device), max_image_pixels=spec["shape"].get("max_pixels", 200_704))
    end = parts.processor.tokenizer.eos_token_id
    encoder = Encoder(parts.processor, load_prompt("person-v1"), [int(end)], image_options(parts.processor, backend))
    crops = _crops(spec["batch"])
    rng = np.random.default_rng(0)
    examples = [Example(c, int(rng.integers(5, 90)), ("female", "male")[i % 2], ("happy", "neutral", "sad")[i % 3])
                for i, c in enumerate(crops)]  # fmt: skip
    autocast = torch.bfloat16 if device.type == "cuda" and spec["method"] == "full" else None
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(model, encoder, len(examples), lambda i: examples[i], cfg, Path(folder), "bench", autocast)
        trainable = sum(p.numel() for _, p in trainer.params)
        trainer.train_step()  # warm-up: allocator, kernels, the optimizer's state
        if device.type == "cuda":
            torch.cuda.synchronize()
        steps, start = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - start < spec["min_s"]:
            trainer.train_step()
            steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s = (time.perf_counter() - start) / steps
        batch = encoder.batch(examples).to(device, model.dtype)
        model.eval()
        forward_runs, start = 0, time.perf_counter()
        while forward_runs < 2 or time.perf_counter() - start < spec["min_s"]:
            with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                model(**batch.inputs, position_ids=trainer.engine.prompt_positions(batch.inputs), use_cache=False,
                      **({"logits_to_keep": batch.labels.shape[1] + 1} if trainer.engine.keeps_logits else {}))  # fmt: skip
            forward_runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        forward_s = (time.perf_counter() - start) / forward_runs
    import importlib.metadata

    return {
        "shape": spec["name"], "family": spec["family"], "method": spec["method"], "batch": spec["batch"],
        "samples_per_s": round(spec["batch"] / step_s, 2), "forward_samples_per_s": round(spec["batch"] / forward_s, 2),
        "ratio": round(step_s / forward_s, 2), "answer_tokens": int(batch.labels.shape[1]),
        "prompt_tokens": int(batch.inputs["input_ids"].shape[1]) - int(batch.labels.shape[1]),
        "trainable_params": trainable, "params": params,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": importlib.metadata.version("peft"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["tiny", "7b"], default=None, help="default: 7b on a GPU, tiny on a CPU")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--min-seconds", type=float, default=None, help="time each row over at least this long")
    parser.add_argument("--out", default="bench/results/finetune.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a row's spec, in the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))), flush=True)
        return
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = GPU if (args.shapes or ("7b" if device == "cuda" else "tiny")) == "7b" else TINY
    min_s = args.min_seconds if args.min_seconds is not None else (3.0 if device == "cuda" else 2.0)
    rows = []
    for name, family, shape, methods in shapes:
        for method in methods:
            for batch in (int(b) for b in args.batches.split(",")):
                spec = {"name": name, "family": family, "shape": shape, "method": method, "batch": batch, "device": device,
                        "min_s": min_s}  # fmt: skip
                done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    row = {"shape": name, "family": family, "method": method, "batch": batch, "error": last[:300]}
                else:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    _importable()
    main()
