"""Telemetry off and no reaching for the internet, for every tool of the stack.

Called first by the CLI and the flows; values already set by the user are kept.
"""

import os

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",  # must be "true": MLflow ignores "1"; also silences Evidently and Prefect
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def quiet_and_offline(root: str | os.PathLike | None = None) -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if root is not None:
        os.environ.setdefault("PREFECT_HOME", os.path.join(os.fspath(root), ".prefect"))
