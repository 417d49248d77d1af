"""The `mirops` command line: thin argument parsing (`mirops.cli.parser`) over the stages in `mirops.pipeline`
(`mirops.cli.commands`). Heavy imports stay lazy, so `mirops --help` is instant.

Human output goes to stderr; `--json` prints one JSON object on stdout for scripts, failures included:
`{"error": ..., "kind": ..., "exit_code": ...}`.

Exit codes: 0 done, 1 the data or a verdict says no (audit failed, files undecodable), 2 bad input or
settings, 3 drift (`monitor --fail-on-drift`), 4 the tracking server is gone, 5 busy (another retraining of
the project, or promotion of the model, held its lock past the wait).
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import sys
import threading
import traceback
from contextlib import suppress
from pathlib import Path

from mirops.cli.parser import Parser, build_parser, merge_common
from mirops.offline import quiet_and_offline


def main(argv: list[str] | None = None) -> None:
    """Run one command in this process; raises SystemExit with the command's exit code on failure."""
    given = sys.argv[1:] if argv is None else argv
    Parser.json_errors = "--json" in given
    args = merge_common(build_parser().parse_args(argv))
    root = Path(args.root or ".").resolve()
    quiet_and_offline(root)
    from mirops.audit.errors import AuditFailed, AuditNotPassed
    from mirops.locks import LockBusy

    try:
        args.func(args)
    except SystemExit as exc:  # a command's own verdict (exit 1 / 3) or a message
        if isinstance(exc.code, str):
            fail(args, exc.code.removeprefix("mirops: "), "usage", 1, exc)
        raise
    except (AuditFailed, AuditNotPassed) as exc:  # the data is the problem: say so, no traceback
        fail(args, str(exc), "audit", 1, exc, prefix="mirops: ")
    except LockBusy as exc:  # another retraining or promotion holds the project's or the model's lock
        fail(args, str(exc), "busy", 5, exc)
    except (FileNotFoundError, FileExistsError, LookupError, ValueError) as exc:
        fail(args, str(exc), type(exc).__name__, 2, exc)
    except Exception as exc:
        if not tracking_server_lost(exc):
            if args.json:
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "kind": "internal", "exit_code": 1}))
            raise
        fail(args, f"the MLflow tracking server ({os.environ.get('MLFLOW_TRACKING_URI')}) did not answer within "
             "the client's retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); nothing "
             f"was registered half-way. Start it again and rerun. ({exc})", "tracking_server", 4, exc)


def fail(args, message: str, kind: str, code: int, cause: BaseException, prefix: str = "mirops: error: "):
    print(f"{prefix}{message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "kind": kind, "exit_code": code}))
    raise SystemExit(code) from cause


def tracking_server_lost(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "MlflowException" and "API request to" in text and (
        "Max retries exceeded" in text or "Connection refused" in text)


def entry() -> None:
    """The `mirops` executable: run the command, shut down what it started, exit with its code.

    Native libraries (onnxruntime, torch, pyarrow, DVC's helpers) keep C++ thread pools whose static
    destructors can abort a finished command at interpreter teardown ("terminate called without an active
    exception", exit 134) when a thread is still alive then. So the work is ended explicitly: Python threads
    joined, exit handlers run (MLflow and Prefect flush there, logging closes), child processes stopped, streams
    flushed, and the process leaves with `os._exit`, skipping the teardown that carries no data.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    shut_down()
    os._exit(code)


def shut_down() -> None:
    """What interpreter exit does before its teardown, in its order: thread pools are told to stop and
    non-daemon threads joined (`threading._shutdown`), then the exit handlers run."""
    threading._shutdown()
    atexit._run_exitfuncs()
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(5)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
