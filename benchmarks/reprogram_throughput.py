"""Training throughput (clips/s) of reprogramming, U-Net + frozen AST: fp32 vs bf16, cached fbanks, JSON on stdout.

One training step = (SpecAugment on the frames) -> U-Net -> frozen AST (SDPA attention) -> linear mapping ->
masked BCE -> backward -> Adam on the transform and head only. Measured in the same run:

* `reference_fp32_b4`: a plain loop like the reference's (Chen & Lerch 2023, docs/methods.md §1): batch 4, fp32,
  the Kaldi fbank computed from the cached waveform for every item inside the step on the CPU, as the reference's
  data loader does (here synchronously, i.e. a loader with no workers), then SpecAugment, then the step.
  (The reference also wrapped the forward in fp16 autocast; the baseline here is plain fp32.)
* `cached_fp32_bN` / `cached_bf16_bN` for each batch N: frames computed once before the clock starts (the
  cached-fbank path of `mirops.pipeline.train`), SpecAugment on the device, bf16 through `torch.autocast`.
* `compiled_bf16_bN` (`--compile`, default on CUDA): the largest batch in bf16 with `torch.compile`; the first
  call's seconds (compilation included) are reported apart from the steady state.
* `yamnet_fp32_b8` (`--yamnet`, default on CPU): YAMNet + U-Net, fp32, batch 8, 10 s clips.

AST has random weights built from a `transformers.ASTConfig` (nothing is downloaded): `--ast full` is the size of
MIT/ast-finetuned-audioset-10-10-0.4593 (768 hidden, 12 layers, 1024 x 128 input, 527 labels), `--ast small` a
4-layer, 192-wide one with the same input. FLOPs of one step are counted once per mode (first warm-up step, with
`torch.utils.flop_counter`; the reference's fbank is not counted) and divided by the measured step time; on CUDA
they are compared with the device's dense datasheet peak.

Usage: python benchmarks/reprogram_throughput.py [--device cpu|cuda] [--ast small|full] [--batches 4,8,16,32,64]
       [--steps 10] [--warmup 2] [--compile | --no-compile] [--yamnet | --no-yamnet] [--seed 0] [--out PATH]
Defaults: CUDA: --ast full --batches 4,8,16,32,64 --steps 10 --warmup 2 --compile --no-yamnet;
          CPU:  --ast small --batches 4,8 --steps 3 --warmup 1 --no-compile --yamnet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from mirops.features.fbank import SAMPLE_RATE
from mirops.models.ast import ASTBackbone
from mirops.models.backbone import Backbone, YamnetBackbone
from mirops.models.reprogram import ReprogrammedClassifier
from mirops.train.loop import SpecAugment, masked_bce

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402 - the benchmarks' own module beside it

CLASSES = [f"c{i}" for i in range(20)]
CLIP_SECONDS = 10.0
FREQ_MASK, TIME_MASK = 24, 96  # the reference's SpecAugment (docs/methods.md §1.3)
ANNOTATED = 0.1  # share of (clip, class) pairs with a label, about OpenMIC's
YAMNET_BATCH = 8

AST_CONFIGS = {
    # The default ASTConfig is AST base (the MIT/ast-finetuned-audioset-10-10-0.4593 architecture) except its
    # 2 labels: the checkpoint has AudioSet's 527.
    "full": {"num_labels": 527},
    "small": {"num_labels": 527, "hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3,
              "intermediate_size": 768},
}

# Dense (no structured sparsity) peak TFLOP/s from NVIDIA's datasheets: bf16 and tf32 on tensor cores, fp32 on
# CUDA cores. The first key found as a whole word in the device name wins, so variants come before the generic
# name (a bare "H100" is the SXM part, "NVIDIA H100 80GB HBM3"; H200 SXM has H100 SXM's compute; "L4" does not
# match an L40S). Unknown devices get no peak.
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H200 NVL", {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("RTX 4090", {"bf16": 165.2, "tf32": 82.6, "fp32": 82.6}),
]


def log(message: str) -> None:
    print(f"[reprogram_throughput] {message}", file=sys.stderr, flush=True)


def peak_table(device: torch.device) -> dict[str, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((dict(peaks) for key, peaks in PEAK_TFLOPS if re.search(rf"\b{re.escape(key)}\b", name)), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def fp32_peak_key() -> str:
    # fp32 matmuls run on tensor cores (TF32) only when allowed; by default they do not.
    return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- FLOP counting


def _sdpa_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts the CPU flash-attention kernels (PyTorch registers only the CUDA ones)."""
    aten = torch.ops.aten
    custom = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _sdpa_forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_backward)):
        if hasattr(aten, name):
            custom[getattr(aten, name)] = formula
    return FlopCounterMode(display=False, custom_mapping=custom)


def attention_ops(counter: FlopCounterMode) -> list[str]:
    return sorted(str(op) for op in counter.get_flop_counts().get("Global", {}) if "attention" in str(op))


# --------------------------------------------------------------------------- models and data


def build_ast(size: str) -> tuple[ASTBackbone, dict]:
    from transformers import ASTConfig, ASTForAudioClassification

    config = ASTConfig(**AST_CONFIGS[size], attn_implementation="sdpa")
    model = ASTForAudioClassification(config)
    summary = {key: getattr(config, key) for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "intermediate_size", "max_length", "num_mel_bins",
                                                     "frequency_stride", "time_stride", "num_labels")}
    summary["attn_implementation"] = model.config._attn_implementation
    return ASTBackbone(model), summary


def make_labels(batch: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """Soft OpenMIC-like labels, about 10 % annotated (NaN elsewhere), at least one per clip."""
    labels = torch.rand(batch, len(CLASSES), generator=generator)
    missing = torch.rand(batch, len(CLASSES), generator=generator) > ANNOTATED
    missing[torch.arange(batch), torch.arange(batch) % len(CLASSES)] = False
    return labels.masked_fill(missing, float("nan")).to(device)


# --------------------------------------------------------------------------- one mode


def run_mode(
    backbone: Backbone,
    load: Callable[[], torch.Tensor],
    batch: int,
    dtype: torch.dtype,
    args: argparse.Namespace,
    compile_model: bool = False,
) -> dict:
    """Warm up, then time `args.steps` training steps; `load()` gives the batch's frames on the device."""
    device = args.device
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = ReprogrammedClassifier(backbone, CLASSES, transform="unet").to(device).train()
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    labels = make_labels(batch, device, generator)
    forward = torch.compile(model.forward_spectrogram) if compile_model else model.forward_spectrogram
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == torch.bfloat16 \
        else contextlib.nullcontext

    def step(counter: FlopCounterMode | None = None) -> None:
        spec = load()
        with counter or contextlib.nullcontext():
            with autocast():
                loss = masked_bce(forward(spec), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    result: dict = {"backbone": "yamnet" if isinstance(backbone, YamnetBackbone) else "ast", "batch": batch,
                    "dtype": "bf16" if dtype == torch.bfloat16 else "fp32", "compiled": compile_model}
    flops, counter = None, None
    sync(device)
    started = time.perf_counter()
    if compile_model:
        step()  # compiles forward and backward
    else:
        counter = flop_counter()
        step(counter)  # the first warm-up step counts the FLOPs
        flops = counter.get_total_flops()
    sync(device)
    first = time.perf_counter() - started
    if compile_model:
        result["compile_seconds"] = first
    for _ in range(args.warmup - 1):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - started) / args.steps
    result.update({"step_seconds": seconds, "clips_per_second": batch / seconds,
                   "first_step_seconds": first,
                   "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
                   "flops_per_step": flops})
    if counter is not None:
        result["attention_ops"] = attention_ops(counter)
    return result


def add_tflops(result: dict, flops: float | None, peaks: dict[str, float] | None) -> dict:
    result["flops_per_step"] = flops
    achieved = flops / result["step_seconds"] / 1e12 if flops else None
    peak = None
    if peaks is not None:
        peak = peaks["bf16"] if result["dtype"] == "bf16" else peaks[fp32_peak_key()]
    result.update({"achieved_tflops": achieved, "peak_tflops": peak,
                   "fraction_of_peak": achieved / peak if achieved is not None and peak else None})
    return result


def guarded(name: str, run: Callable[[], dict], catch_all: bool = False) -> dict:
    """Run one mode; out-of-memory (and, for `catch_all`, any error) is recorded instead of ending the run."""
    log(f"{name} ...")
    try:
        result = run()
    except torch.OutOfMemoryError as exc:
        log(f"{name}: out of memory")
        result = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    except Exception as exc:
        if not catch_all:
            raise
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if "error" not in result:
        log(f"{name}: {result['clips_per_second']:.2f} clips/s, {result['step_seconds']:.3f} s/step")
    return result


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ast", choices=sorted(AST_CONFIGS), help="AST size (default: full on CUDA, small on CPU)")
    parser.add_argument("--batches", help="comma-separated batch sizes (default: 4,8,16,32,64 on CUDA, 4,8 on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per mode (default: 10 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="warm-up steps per mode, at least 1 (default: 2 on CUDA, 1 on CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the largest batch in bf16 under torch.compile (default: on for CUDA)")
    parser.add_argument("--yamnet", action=argparse.BooleanOptionalAction, default=None,
                        help="also time YAMNet + U-Net, fp32, batch 8 (default: on for CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    args.ast = args.ast or ("full" if cuda else "small")
    args.batches = [int(b) for b in (args.batches or ("4,8,16,32,64" if cuda else "4,8")).split(",")]
    args.steps = args.steps or (10 if cuda else 3)
    args.warmup = max(1, args.warmup if args.warmup is not None else (2 if cuda else 1))
    args.compile = cuda if args.compile is None else args.compile
    args.yamnet = (not cuda) if args.yamnet is None else args.yamnet
    return args


def main() -> None:
    args = parse_args()
    device = args.device
    wall = time.perf_counter()
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the U-Net's conv algorithms
    peaks = peak_table(device)
    log(f"device {device}, AST {args.ast}, batches {args.batches}, {args.steps} timed steps")

    backbone, ast_config = build_ast(args.ast)
    backbone = backbone.to(device)
    augment = SpecAugment(FREQ_MASK, TIME_MASK)
    samples = int(SAMPLE_RATE * CLIP_SECONDS)
    generator = torch.Generator().manual_seed(args.seed)
    waves = torch.randn(max([*args.batches, 4]), samples, generator=generator) * 0.1  # cached waveforms, on the host

    # The cached-fbank path: frames computed once, kept on the device.
    started = time.perf_counter()
    with torch.no_grad():
        frames = torch.cat([backbone.frontend(waves[i : i + 8]) for i in range(0, len(waves), 8)]).to(device)
    cache_seconds = time.perf_counter() - started

    def reference_load() -> torch.Tensor:
        # Per item, on the host, as the reference's Dataset.__getitem__: fbank, then SpecAugment; then to the device.
        with torch.no_grad():
            items = [augment(backbone.frontend(wave.unsqueeze(0))) for wave in waves[:4]]
        return torch.cat(items).to(device)

    def cached_load(batch: int) -> Callable[[], torch.Tensor]:
        return lambda: augment(frames[:batch])

    modes: dict[str, dict] = {}
    flops: dict[int, float] = {}  # AST step FLOPs by batch (the same in fp32 and bf16)

    def record(name: str, result: dict) -> None:
        if "error" not in result:
            if result["flops_per_step"]:
                flops.setdefault(result["batch"], result["flops_per_step"])
            add_tflops(result, result["flops_per_step"] or flops.get(result["batch"]), peaks)
        modes[name] = result

    record("reference_fp32_b4", guarded(
        "reference_fp32_b4", lambda: run_mode(backbone, reference_load, 4, torch.float32, args)
    ) | {"fbank": "per_item_in_step"})
    for batch in args.batches:
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            name = f"cached_{tag}_b{batch}"
            record(name, guarded(
                name, lambda b=batch, d=dtype: run_mode(backbone, cached_load(b), b, d, args)
            ) | {"fbank": "cached"})
    if args.compile:
        batch = max(args.batches)
        name = f"compiled_bf16_b{batch}"
        record(name, guarded(name, lambda: run_mode(backbone, cached_load(batch), batch, torch.bfloat16, args,
                                                    compile_model=True), catch_all=True) | {"fbank": "cached"})
    ast_parameters = ReprogrammedClassifier(backbone, CLASSES, transform="unet").count_parameters()

    yamnet_parameters = None
    if args.yamnet:
        yamnet = YamnetBackbone.from_onnx().to(device)
        with torch.no_grad():
            yamnet_frames = yamnet.frontend(waves[:YAMNET_BATCH].to(device))
        yamnet_augment = SpecAugment(FREQ_MASK * yamnet_frames.shape[-1] // 128, TIME_MASK)  # same share of bins
        record(f"yamnet_fp32_b{YAMNET_BATCH}", guarded(f"yamnet_fp32_b{YAMNET_BATCH}", lambda: run_mode(
            yamnet, lambda: yamnet_augment(yamnet_frames), YAMNET_BATCH,
            torch.float32, args)) | {"fbank": "cached"})
        yamnet_parameters = ReprogrammedClassifier(yamnet, CLASSES, transform="unet").count_parameters()

    reference = modes["reference_fp32_b4"].get("clips_per_second")
    speedups = {name: mode["clips_per_second"] / reference for name, mode in modes.items()
                if reference and name != "reference_fp32_b4" and mode.get("backbone") == "ast"}
    report = {
        "benchmark": "reprogram_throughput",
        "device": device.type,
        "device_name": device_name(device),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "config": {
            "ast": args.ast, "ast_config": ast_config, "batches": args.batches, "steps": args.steps,
            "warmup": args.warmup, "seed": args.seed, "clip_seconds": CLIP_SECONDS, "classes": len(CLASSES),
            "transform": "unet", "mapping": "linear", "optimizer": "adam", "annotated_share": ANNOTATED,
            "spec_augment": {"freq_mask": FREQ_MASK, "time_mask": TIME_MASK}, "compile": args.compile,
            "yamnet": args.yamnet, "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        },
        "parameters": {"ast": ast_parameters, "yamnet": yamnet_parameters},
        "fbank_cache_seconds": cache_seconds,
        "fbank_cache_clips": len(waves),
        "peak_tflops": peaks and {**peaks, "source": "NVIDIA datasheet, dense"},
        "modes": modes,
        "speedup_vs_reference": speedups,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": time.perf_counter() - wall,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
