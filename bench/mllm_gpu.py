"""The MLLM estimator against the bound of its device: crops/s per answer mode and batch size,
beside a bare prefill of the same batches, with peak memory.

Random models of real shapes are built in memory on the device (nothing downloaded), with the
real model and processor classes (``pipeline/estimators/mllm/tiny_families.py``): LLaVA-1.5-7B
(CLIP ViT-L/14-336 + Llama, 576 tokens per image) and Qwen2.5-VL-7B (dynamic resolution,
M-RoPE). Every crop is a face (112 x 112) and a body (128 x 256) from a real photo, through
``MllmEstimator`` exactly as the service calls it. Rows of ``--out`` (a JSON list):

    shape, family, mode, batch, crops_per_s, prefill_crops_per_s (processor + one forward with
    the last logits only, the same crops and batches), ratio, prefill_only_crops_per_s,
    peak_memory_gib, prompt_tokens, params, device, torch, transformers

and one ``bound`` row: the device's measured bf16 (CPU: fp32) matrix-multiply rate and the
crops/s that rate allows for each shape's prompt. ``--shapes tiny`` (the default on a CPU, as
``make bench`` runs it) uses the families' tiny shapes, so the script is exercised everywhere;
run it on a GPU with ``--shapes 7b``.

    python bench/mllm_gpu.py --shapes 7b --out bench/results/mllm_gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import numpy as np

SHAPES = {
    "llava-1.5-7b": ("llava", {
        "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32, "vocab_size": 32064, "initializer_range": 0.02},
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "projection_dim": 768},
        "image_size": 336, "patch": 14,
    }),
    "qwen2.5-vl-7b": ("qwen2_5_vl", {
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                 "num_key_value_heads": 4, "vocab_size": 152064, "initializer_range": 0.02},
        "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
        "mrope_section": [16, 24, 24], "max_pixels": 200_704,
    }),
}  # fmt: skip
TINY = {"llava-tiny": ("llava", {"image_size": 56}), "qwen2.5-vl-tiny": ("qwen2_5_vl", {})}


def _crops(n: int):
    """``n`` face (112 x 112) + body (128 x 256) crops. The weights are random, so what the
    pixels show does not matter; a seeded texture stands in for a photo (the GPU machine may
    lack scikit-image)."""
    from tracklens.pipeline.types import Crop

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    body = rng.integers(0, 256, (256, 128, 3), dtype=np.uint8)
    box = np.array([0, 0, 112, 112], np.float32)
    return [Crop(f"b:0:{i}", 0.0, face, box, body, 1.0, face_px=112.0) for i in range(n)]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _matmul_rate(device, dtype) -> float:
    """FLOP/s of a large square matrix multiply on the device (the compute bound)."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _timed(lambda: a @ b, device, min_s=1.0)


def _timed(call, device, min_s: float) -> float:
    """Seconds per call, averaged over repeats filling at least ``min_s`` (after one warm-up)."""
    call()
    _sync(device)
    runs, start = 0, time.perf_counter()
    while True:
        call()
        runs += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s and runs >= 2:
            return elapsed / runs


def bench_shape(name: str, family: str, shape: dict, device, dtype, batches: list[int], min_s: float) -> list[dict]:
    import torch
    import transformers
    from tracklens.pipeline.config import MllmEstimatorConfig, TransformersBackendConfig
    from tracklens.pipeline.estimators.mllm import MllmEstimator
    from tracklens.pipeline.estimators.mllm.tiny_families import family_parts
    from tracklens.pipeline.estimators.mllm.transformers_backend import TransformersBackend

    parts = family_parts(family, shape)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = parts.model()  # random weights, built where they run: no CPU copy, no download
    finally:
        torch.set_default_dtype(default)
    # the weights every prompt token passes through: not the embedding table (a lookup) nor the
    # LM head (it runs on the last position only); the vision tower's own work is not counted
    skipped = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None for p in m.parameters()}
    params = sum(p.numel() for p in model.parameters() if id(p) not in skipped)
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    config = TransformersBackendConfig(model=name, device=str(device), dtype=dtype_name, warmup=False,
                                       max_image_pixels=shape.get("max_pixels", 200_704))  # fmt: skip
    backend = TransformersBackend(config, loaded=(model, parts.processor))
    rows = []
    for batch in batches:
        crops = _crops(batch)
        est = MllmEstimator(MllmEstimatorConfig(backend=config, mode="constrained", batch_size=batch), backend=backend)
        requests = [est._request(c) for c in crops]

        prepared = backend._inputs(requests)

        def prefill(inputs: dict | None = None) -> None:
            inputs = backend._inputs(requests) if inputs is None else inputs
            with torch.inference_mode():
                backend.model(**inputs, position_ids=backend.engine.prompt_positions(inputs), logits_to_keep=1)

        prefill_s = _timed(prefill, device, min_s)  # the processor's work included, as the estimator's is
        prefill_only_s = _timed(lambda: prefill(prepared), device, min_s)
        prompt_tokens = int(backend._inputs(requests[:1])["input_ids"].shape[1])
        for mode in ("constrained", "scored"):
            est.config = est.config.model_copy(update={"mode": mode})
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            seconds = _timed(lambda: est.estimate(crops), device, min_s)
            valid = sum(e.valid for e in est.estimate(crops))
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            rows.append({
                "shape": name, "family": family, "mode": mode, "batch": batch,
                "crops_per_s": round(batch / seconds, 2), "prefill_crops_per_s": round(batch / prefill_s, 2),
                "ratio": round(prefill_s / seconds, 3), "prefill_only_crops_per_s": round(batch / prefill_only_s, 2),
                "valid": f"{valid}/{batch}", "peak_memory_gib": None if peak is None else round(peak, 2),
                "prompt_tokens": prompt_tokens, "params": params,
                "device": _device_name(device), "dtype": dtype_name, "torch": torch.__version__,
                "transformers": transformers.__version__,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["tiny", "7b"], default=None, help="default: 7b on a GPU, tiny on a CPU")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--min-seconds", type=float, default=None, help="time each row over at least this long")
    parser.add_argument("--out", default="bench/results/mllm_gpu.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = SHAPES if (args.shapes or ("7b" if device.type == "cuda" else "tiny")) == "7b" else TINY
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    min_s = args.min_seconds if args.min_seconds is not None else (2.0 if device.type == "cuda" else 0.5)
    batches = [int(b) for b in args.batches.split(",")]
    rate = _matmul_rate(device, dtype)
    rows = []
    for name, (family, shape) in shapes.items():
        rows += bench_shape(name, family, shape, device, dtype, batches, min_s)
        gc.collect()  # the shape's model went with bench_shape's frame
        if device.type == "cuda":
            torch.cuda.empty_cache()
    bound = {"bound": True, "device": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
             "matmul_tflops": round(rate / 1e12, 2), "crops_per_s_at_that_rate": {}}  # fmt: skip
    for name in shapes:
        row = next(r for r in rows if r["shape"] == name)
        flops = 2 * row["params"] * row["prompt_tokens"]  # every weight once per prompt token
        bound["crops_per_s_at_that_rate"][name] = round(rate / flops, 2)
    rows.append(bound)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


def _importable() -> None:
    """Make ``tracklens`` importable from this checkout when it is not installed (a GPU machine
    with torch and transformers but no pip install of the project): its package folders are
    linked under a temporary ``tracklens`` package, as pyproject.toml maps them."""
    import importlib.util
    import sys
    import tempfile

    if importlib.util.find_spec("tracklens") is not None:
        return
    repo = Path(__file__).resolve().parent.parent
    root = Path(tempfile.mkdtemp(prefix="tracklens-src-"))
    (root / "tracklens").mkdir()
    (root / "tracklens" / "__init__.py").write_text((repo / "tracklens" / "__init__.py").read_text())
    for folder, name in (("pipeline", "pipeline"), ("trackers", "trackers"), ("serve", "serve"), ("configs", "configs")):
        (root / "tracklens" / name).symlink_to(repo / folder)
    sys.path.insert(0, str(root))


if __name__ == "__main__":
    _importable()
    main()
