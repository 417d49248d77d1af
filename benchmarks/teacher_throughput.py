"""What computing each EAsT teacher costs: seconds per clip of the paper's four at full size (random weights in
the official layout; the cost does not depend on the values) and YAMNet, the offline teacher, as the baseline in
the same run. JSON on stdout: per teacher and clip length (10 s OpenMIC, 29.1 s MTAT), the median seconds per
clip over `--repeats` after one warm-up, its real-time factor and the frames it gives; plus the projected hours
for OpenMIC (20,000 clips of 10 s) and MTAT (21,105 clips of 29.1 s) at that rate on this machine.
Usage: python benchmarks/teacher_throughput.py [--repeats 3] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import cpu_name  # noqa: E402

DATASETS = {"openmic": (20_000, 10.0), "mtat": (21_105, 29.1)}


def build(name: str):
    from mirops.models.teacher_nets.openl3 import OpenL3Mel128
    from mirops.models.teacher_nets.panns import Cnn14
    from mirops.models.teacher_nets.passt import PaSST
    from mirops.models.teacher_nets.vggish import VGGish
    from mirops.models.teachers import NetTeacher, YamnetTeacher

    if name == "yamnet":
        return YamnetTeacher.from_onnx()
    net = {"vggish": VGGish, "openl3": OpenL3Mel128, "passt": PaSST, "panns": Cnn14}[name]()
    if name == "vggish":  # an identity PCA: the post-processing costs the same whatever its values
        net.pproc.load_pca({"pca_eigen_vectors": torch.eye(128).numpy(), "pca_means": torch.zeros(128).numpy()})
    return NetTeacher(net, name)


def seconds_per_clip(teacher, seconds: float, repeats: int, device: torch.device) -> tuple[float, int]:
    audio = 0.1 * torch.randn(1, int(seconds * teacher.sample_rate), device=device)
    frames = teacher.teach(audio).embeddings.shape[1]  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        teacher.teach(audio)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in ("yamnet", "vggish", "openl3", "passt", "panns"):
        teacher = build(name).to(device)
        for clip_seconds in (10.0, 29.1):
            per_clip, frames = seconds_per_clip(teacher, clip_seconds, args.repeats, device)
            row = {"teacher": name, "clip_seconds": clip_seconds, "sample_rate": teacher.sample_rate,
                   "frames": frames, "dim": teacher.embedding_dim, "seconds_per_clip": round(per_clip, 4),
                   "real_time_factor": round(clip_seconds / per_clip, 1)}
            dataset = next(d for d, (_, s) in DATASETS.items() if s == clip_seconds)
            row[f"{dataset}_hours"] = round(DATASETS[dataset][0] * per_clip / 3600, 2)
            rows.append(row)
            print(f"{name:7s} {clip_seconds:5.1f} s: {per_clip:.3f} s/clip, {frames} frames", file=sys.stderr)
        del teacher
    print(json.dumps({"benchmark": "teacher_throughput", "date": date.today().isoformat(),
                      "machine": {"cpu": cpu_name(), "cores_used": args.threads, "device": str(device),
                                  "python": platform.python_version(), "torch": torch.__version__},
                      "baseline": "yamnet (the offline teacher, same run)", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
