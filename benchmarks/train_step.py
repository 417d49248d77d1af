"""Training-step throughput of the reprogrammed classifier, JSON on stdout.

Baseline in the same run: the same frozen backbone with no input transform (only the head trains),
so the figure says what the U-Net's gradient path through the backbone costs.
Usage: python benchmarks/train_step.py [--batch 8] [--seconds 10] [--steps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from mirops.models.reprogram import ReprogrammedClassifier
from mirops.models.yamnet import YAMNet
from mirops.train.loop import masked_bce


def measure(transform: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    model = ReprogrammedClassifier(YAMNet.from_onnx(), [f"c{i}" for i in range(20)], transform=transform)
    model = model.to(args.device).train()
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    wave = torch.randn(args.batch, int(16000 * args.seconds), device=args.device) * 0.1
    spec = model.spectrogram(wave)
    labels = torch.randint(0, 2, (args.batch, 20), device=args.device).float()

    def step() -> None:
        loss = masked_bce(model.forward_spectrogram(spec), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()  # warm-up (allocations, lazy imports)
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    return {"step_seconds": seconds, "clips_per_second": args.batch / seconds,
            "trainable_parameters": model.count_parameters()["trainable"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    unet, baseline = measure("unet", args), measure("none", args)
    print(json.dumps({
        "benchmark": "reprogram_train_step", "device": args.device, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "torch": torch.__version__, "batch": args.batch, "clip_seconds": args.seconds,
        "unet": unet, "baseline_no_transform": baseline,
        "unet_over_baseline": unet["step_seconds"] / baseline["step_seconds"],
    }, indent=2))


if __name__ == "__main__":
    main()
