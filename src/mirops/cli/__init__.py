"""The `mirops` command line: thin argument parsing (`mirops.cli.parser`) over the stages in `mirops.pipeline`
(`mirops.cli.commands`). Heavy imports stay lazy, so `mirops --help` is instant.

Human output goes to stderr; `--json` prints one JSON object on stdout for scripts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mirops.cli.parser import build_parser
from mirops.offline import quiet_and_offline


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    root = Path(args.root or ".").resolve()
    quiet_and_offline(root)
    from mirops.audit.report import AuditFailed
    from mirops.pipeline.audit import AuditNotPassed

    try:
        args.func(args)
    except (AuditFailed, AuditNotPassed) as exc:  # the data is the problem: say so, no traceback
        print(f"mirops: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    except (FileNotFoundError, FileExistsError, LookupError, ValueError) as exc:
        print(f"mirops: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except Exception as exc:
        if not tracking_server_lost(exc):
            raise
        print(f"mirops: error: the MLflow tracking server ({os.environ.get('MLFLOW_TRACKING_URI')}) did not answer "
              "within the client's retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); "
              f"nothing was registered half-way. Start it again and rerun. ({exc})", file=sys.stderr)
        raise SystemExit(4) from exc


def tracking_server_lost(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "MlflowException" and "API request to" in text and (
        "Max retries exceeded" in text or "Connection refused" in text)

