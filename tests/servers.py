"""Helpers of the real-server tests (tests/test_servers.py): environments for client processes, the
Prefect and MLflow REST APIs read with plain HTTP, waiting, and checks that no process outlived a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from mirops.services import LocalServers, child_env, tool

MIROPS = tool("mirops")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def client_env(servers: LocalServers, root: Path, **extra: str | None) -> dict[str, str]:
    """The environment of a `mirops` process that uses the servers (and nothing else: its own PREFECT_HOME)."""
    return child_env(servers.env | {"PREFECT_HOME": str(root / ".prefect"), "MIROPS_REPROGRAM__EPOCHS": "1",
                                    "MLFLOW_REGISTRY_URI": None} | extra)


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    """GET (or POST `body` as JSON) and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with _OPENER.open(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def prefect(servers: LocalServers, path: str, body: Any = None) -> Any:
    return http_json(servers.prefect.url + path, body)


def prefect_or_none(servers: LocalServers, path: str, body: Any = None) -> Any:
    try:
        return prefect(servers, path, body)
    except (urllib.error.URLError, OSError):  # 404 (not there yet), or not answering
        return None


def flow_runs(servers: LocalServers, deployment_id: str | None = None, flow_name: str | None = None) -> list[dict]:
    body: dict[str, Any] = {"sort": "EXPECTED_START_TIME_ASC", "limit": 50}
    if deployment_id:
        body["deployments"] = {"id": {"any_": [deployment_id]}}
    if flow_name:
        body["flows"] = {"name": {"any_": [flow_name]}}
    return prefect(servers, "/flow_runs/filter", body)


def mlflow_runs(url: str, experiment: str, step: str) -> list[dict]:
    """The runs of `step` in `experiment`, by REST with a short timeout (for polling while the server may be down)."""
    try:
        found = http_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}", timeout=5)
        answer = http_json(f"{url}/api/2.0/mlflow/runs/search",
                           {"experiment_ids": [found["experiment"]["experiment_id"]],
                            "filter": f"tags.`mirops.step` = '{step}'"}, timeout=5)
    except (urllib.error.URLError, OSError, KeyError):
        return []
    return answer.get("runs", [])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (and `on_timeout()`'s story)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"\n{on_timeout()}" if on_timeout else ""))
        time.sleep(interval)


def tail(path: Path | str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path}: no such file)"


@contextmanager
def spawned(argv: list[str], env: dict[str, str], out: Path, err: Path) -> Iterator[subprocess.Popen]:
    """A command in its own process group (stdout, stderr to files); the group is killed on the way out."""
    with open(out, "wb") as fout, open(err, "wb") as ferr:
        proc = subprocess.Popen(argv, env=env, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:  # ask first (SIGTERM: `mirops serve` pauses its schedules), then insist
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with suppress(ProcessLookupError):  # leftovers of a finished command's group
            os.killpg(proc.pid, signal.SIGKILL)


def last_json(text: str, prefix: str = "") -> dict:
    """The last line of `text` that is a JSON object (after `prefix`)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(prefix) and line[len(prefix):].lstrip().startswith("{"):
            with suppress(ValueError):
                return json.loads(line[len(prefix):])
    raise AssertionError(f"no JSON line{f' after {prefix!r}' if prefix else ''} in:\n{text[-3000:]}")


def run_python(code: str, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def noise_batch(folder: Path, clips: int = 8, seconds: float = 3.0, sample_rate: int = 16000) -> Path:
    """A batch of audio nothing like the training music (loud filtered noise bursts): it must drift."""
    from mirops.data.audio import write_wav

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sample_rate)
    for i in range(clips):  # white noise in bursts of a different rate per clip
        gate = (np.sin(np.arange(n) / sample_rate * 2 * np.pi * (2 + i)) > 0).astype(np.float32)
        wave = rng.normal(0, 1, n).astype(np.float32) * (0.3 + 0.7 * gate)
        write_wav(folder / f"noise_{i:02d}.wav", 0.5 * wave / np.abs(wave).max(), sample_rate)
    return folder


def process_tree(pid: int) -> list:
    """The process `pid` and its descendants, as psutil.Process objects (empty if it is gone)."""
    import psutil

    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def assert_gone(processes: list, what: str) -> None:
    """Every process of the list has exited (psutil.Process objects, so a reused pid does not count)."""
    from mirops.services import is_alive

    left = [p for p in processes if is_alive(p)]
    assert not left, f"{what}: processes left behind: " + ", ".join(
        f"{p.pid} ({' '.join(p.cmdline()[:4])})" for p in left)


def registry_is_consistent(client, dst: Path) -> dict[str, list[str]]:
    """Every registered version has its model files (downloaded), every alias points to such a version.

    Returns {model name: [versions]}; fails naming the first broken version or alias.
    """
    import mlflow

    found: dict[str, list[str]] = {}
    for model in client.search_registered_models():
        versions = {mv.version: mv for mv in client.search_model_versions(f"name = '{model.name}'")}
        found[model.name] = sorted(versions, key=int)
        for version in versions:
            target = dst / model.name / str(version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model.name}/{version}",
                                                             dst_path=str(target)))
            files = {p.name for p in local.rglob("*") if p.is_file()}
            assert "MLmodel" in files and len(files) > 1, f"{model.name} v{version}: model files missing ({files})"
        for alias, version in (model.aliases or {}).items():
            assert str(version) in versions, f"{model.name}@{alias} points to v{version}, which does not exist"
    return found
