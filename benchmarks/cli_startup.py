"""How long a `mirops` command takes before it does any work; JSON on stdout.

Every scheduled job, DVC stage and test starts the `mirops` executable, so its start-up is paid on each call.
Measured as wall time of whole processes (median of `--repeat` runs), against a baseline in the same run:
a bare `python -c pass` of the same interpreter, and what the CLI imported on every command until
2026-12-03 to catch the audit's exceptions (Great Expectations and the whole audit stage).
Target: a command that needs no model or store (`mirops data versions`) starts in under 1 s.
Usage: python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
        mirops = str(BIN / "mirops")
        result = {
            "baseline_python_s": wall([sys.executable, "-c", "pass"], project, args.repeat),
            "baseline_old_exception_imports_s": wall(
                [sys.executable, "-c", "import mirops.audit.report, mirops.pipeline.audit"], project, args.repeat),
            "mirops_version_s": wall([mirops, "--version"], project, args.repeat),
            "mirops_help_s": wall([mirops, "--help"], project, args.repeat),
            "mirops_data_versions_s": wall([mirops, "data", "versions", "--json"], project, args.repeat),
            "repeat": args.repeat,
        }
    result["target_met"] = result["mirops_data_versions_s"] < 1.0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
