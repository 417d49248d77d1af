"""Local servers as child processes: `mlflow server`, `prefect server start` and `evidently ui` on localhost.

Each server runs in a session (and so a process group) of its own, writes its output to a log file, and is
ready when its health URL answers. `Service.stop()` ends the whole group, SIGTERM then SIGKILL, and any
descendant that left it, so nothing outlives it. `local_servers()` starts MLflow and Prefect for a block of
code and yields the two URLs to export (`MLFLOW_TRACKING_URI`, `PREFECT_API_URL`); nothing else changes between
the embedded defaults and real servers. `project_uis()` are the three UIs of a project's own stores, which
`mirops ui` serves until Ctrl-C (`serve_until_stopped`). Used by the integration tests and by `mirops ui`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from mirops.offline import OFFLINE_ENV

LOCALHOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A server did not start (or answer) in time; the message carries the end of its log."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether nobody listens on `port` of `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def choose_port(wanted: int | None, host: str = LOCALHOST) -> tuple[int, str | None]:
    """`wanted` if it is free, else a free port and a sentence saying so; 0 or None: any free port."""
    if not wanted:
        return free_port(host), None
    if port_is_free(wanted, host):
        return wanted, None
    port = free_port(host)
    return port, f"port {wanted} is taken, using {port}"


def tool(name: str) -> str:
    """The console script `name` of this Python environment (the venv's `mlflow`, `prefect`), else PATH's."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name}: not installed in {Path(sys.executable).parent} nor on PATH")
    return found


def _answers(url: str, timeout: float = 2.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


@dataclass
class Service:
    """A server (or any long-running command) in its own process group, with its log file.

    `url` is what clients use; `health_url` answers 2xx once it is ready (None: no readiness check).
    """

    name: str
    url: str
    argv: list[str]
    log_path: Path
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    # ------------------------------------------------------------ life cycle
    def start(self, wait: bool = True, timeout: float = 180.0) -> Service:
        """Launch the command (appending to its log); `wait`: block until the health URL answers."""
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env or None, cwd=self.cwd, start_new_session=True,  # its own session and group
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 180.0) -> Service:
        """Block until the health URL answers; on failure stop everything and raise with the log's end."""
        if self.health_url is None:
            return self
        deadline = time.monotonic() + timeout
        while not _answers(self.health_url):
            code = self.process.poll() if self.process else None
            if code is not None:
                self.stop()
                raise ServiceError(f"{self.name} exited with code {code} before answering {self.health_url}; "
                                   f"end of its log {self.log_path}:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not answer {self.health_url} within {timeout:.0f} s; "
                                   f"end of its log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.5)
        return self

    def restart(self, wait: bool = True, timeout: float = 180.0) -> Service:
        """Stop (if running) and start the same command again: same port, same store."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def processes(self) -> list:
        """The live processes of this service: the leader, its descendants and its process group (psutil)."""
        import psutil

        if self.process is None:
            return []
        found: dict[int, psutil.Process] = {}
        try:
            leader = psutil.Process(self.process.pid)
            found[leader.pid] = leader
            found.update({child.pid: child for child in leader.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid:
                    found[proc.pid] = proc
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return [p for p in found.values() if is_alive(p)]

    def stop(self, timeout: float = 15.0) -> None:
        """End the process group (SIGTERM, then SIGKILL after `timeout` s) and any descendant outside it."""
        import psutil

        if self.process is None:
            return
        procs = self.processes()
        if not procs and self.process.poll() is not None:
            return  # already stopped: do not signal a group id the system may have handed out again
        pgid = self.process.pid
        _signal_group(pgid, signal.SIGTERM)
        for proc in procs:  # descendants that started a group of their own
            try:
                if os.getpgid(proc.pid) != pgid:
                    proc.terminate()
            except (ProcessLookupError, psutil.Error):
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        if alive or self.processes():
            _signal_group(pgid, signal.SIGKILL)
            for proc in alive:
                with suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)  # reap the leader

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def is_alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with the stack's offline/quiet settings; `extra` wins (None removes)."""
    env = dict(os.environ)
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def sqlite_uri(path: Path, driver: str = "sqlite") -> str:
    return f"{driver}:///{Path(path).resolve()}"


def mlflow_server(backend_store_uri: str, artifacts_dir: Path, log_dir: Path, *, host: str = LOCALHOST,
                  port: int | None = None, registry_store_uri: str | None = None, workers: int = 1,
                  env: Mapping[str, str | None] | None = None) -> Service:
    """`mlflow server` over `backend_store_uri` (sqlite:///..., postgresql://user@host/db) that proxies
    artifacts to `artifacts_dir` (clients get mlflow-artifacts:/ URIs and need no file access). Not started."""
    port = port or free_port(host)
    artifacts_dir = Path(artifacts_dir).resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    argv = [tool("mlflow"), "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", backend_store_uri, "--serve-artifacts",
            "--artifacts-destination", str(artifacts_dir)]
    if registry_store_uri:
        argv += ["--registry-store-uri", registry_store_uri]
    url = f"http://{host}:{port}"
    # Job execution off: otherwise the server starts a pool of worker processes that can outlive it.
    env = child_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": None, **(env or {})})
    return Service("mlflow", url, argv, Path(log_dir) / f"mlflow-{port}.log", health_url=f"{url}/health", env=env)


def prefect_server(home: Path, log_dir: Path, *, host: str = LOCALHOST, port: int | None = None,
                   database_url: str | None = None, ui: bool = True, services: bool = True,
                   env: Mapping[str, str | None] | None = None) -> Service:
    """`prefect server start` with PREFECT_HOME=`home` and its own database: `database_url`
    (e.g. postgresql+asyncpg://user@host:5432/prefect) or `home`/prefect.db (SQLite). Not started.

    `services` runs the scheduler (cron deployments create their runs) and the other loop services.
    """
    port = port or free_port(host)
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    database_url = database_url or sqlite_uri(home / "prefect.db", "sqlite+aiosqlite")
    url = f"http://{host}:{port}/api"
    argv = [tool("prefect"), "server", "start", "--host", host, "--port", str(port)]
    argv += [] if ui else ["--no-ui"]
    argv += [] if services else ["--no-services"]
    env = child_env({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,  # the older name; both, so neither contradicts
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(env or {}),
    })
    return Service("prefect", url, argv, Path(log_dir) / f"prefect-{port}.log", health_url=f"{url}/health", env=env)


def evidently_ui(workspace: Path, log_dir: Path, *, host: str = LOCALHOST, port: int | None = None,
                 env: Mapping[str, str | None] | None = None) -> Service:
    """`evidently ui` over the local workspace folder `workspace` (it picks up runs written while it serves).
    Not started."""
    port = port or free_port(host)
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    argv = [tool("evidently"), "ui", "--workspace", str(workspace), "--host", host, "--port", str(port)]
    url = f"http://{host}:{port}"
    return Service("evidently", url, argv, Path(log_dir) / f"evidently-{port}.log", health_url=f"{url}/api/version",
                   env=child_env(env), cwd=workspace.parent)


def ui_url(service: Service) -> str:
    """Where a person points the browser: the server's root (Prefect's `url` is its API)."""
    return service.url.removesuffix("/api")


def project_uis(root: Path, *, host: str = LOCALHOST, mlflow_port: int | None = 5000, prefect_port: int | None = 4200,
                evidently_port: int | None = 8000) -> tuple[list[Service], list[str]]:
    """The MLflow UI over the project's store (`root`/mlruns.db, artifacts in `root`/mlartifacts), the Prefect UI
    over its PREFECT_HOME (`root`/.prefect) and the Evidently UI over `root`/dashboards/workspace, logs in
    `root`/dashboards/logs; not started. A port that is taken is replaced by a free one: the notes say which."""
    root = Path(root).resolve()
    logs = root / "dashboards" / "logs"
    notes: list[str] = []
    ports = {}
    for name, wanted in (("MLflow", mlflow_port), ("Prefect", prefect_port), ("Evidently", evidently_port)):
        ports[name], note = choose_port(wanted, host)
        if note:
            notes.append(f"{name} UI: {note}")
    services = [
        mlflow_server(sqlite_uri(root / "mlruns.db"), root / "mlartifacts", logs, host=host, port=ports["MLflow"]),
        prefect_server(root / ".prefect", logs, host=host, port=ports["Prefect"]),
        evidently_ui(root / "dashboards" / "workspace", logs, host=host, port=ports["Evidently"]),
    ]
    return services, notes


def serve_until_stopped(services: list[Service], *, on_ready: Callable[[], None] | None = None,
                        timeout: float = 240.0, poll: float = 0.5) -> int:
    """Start `services` together, call `on_ready` once all answer, then wait until SIGINT (Ctrl-C), SIGTERM or
    SIGHUP, or until one of them exits; stop them all (their whole process groups) whatever happens.
    Returns 0 when stopped by a signal, 1 when a service exited on its own."""
    # SIGINT too: a process started in the background by a shell inherits SIGINT ignored.
    stop_signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = {sig: signal.getsignal(sig) for sig in stop_signals}

    def interrupt(signum, frame):  # each ends the wait the way Ctrl-C does
        raise KeyboardInterrupt

    for sig in stop_signals:
        signal.signal(sig, interrupt)
    try:
        for service in services:
            service.start(wait=False)
        for service in services:
            service.wait_ready(timeout)
        if on_ready is not None:
            on_ready()
        while True:
            for service in services:
                if not service.running:
                    print(f"{service.name} stopped on its own (exit code {service.process.poll()}); end of its log "
                          f"{service.log_path}:\n{_tail(service.log_path)}", file=sys.stderr)
                    return 1
            time.sleep(poll)
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in stop_signals:  # a second Ctrl-C while stopping must not leave half the servers running
            signal.signal(sig, signal.SIG_IGN)
        try:
            for service in reversed(services):
                service.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass
class LocalServers:
    mlflow: Service
    prefect: Service

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to use them."""
        return {"MLFLOW_TRACKING_URI": self.mlflow.url, "PREFECT_API_URL": self.prefect.url}

    @property
    def services(self) -> list[Service]:
        return [self.mlflow, self.prefect]


@contextmanager
def local_servers(folder: Path, *, mlflow_backend: str | None = None, prefect_database: str | None = None,
                  prefect_ui: bool = True, prefect_env: Mapping[str, str | None] | None = None,
                  timeout: float = 240.0) -> Iterator[LocalServers]:
    """Start an MLflow server (default: `folder`/mlflow.db + `folder`/mlartifacts) and a Prefect server
    (PREFECT_HOME `folder`/prefect) side by side, logs in `folder`/logs; stop both, whatever happens."""
    folder = Path(folder).resolve()
    logs = folder / "logs"
    servers = LocalServers(
        mlflow=mlflow_server(mlflow_backend or sqlite_uri(folder / "mlflow.db"), folder / "mlartifacts", logs),
        prefect=prefect_server(folder / "prefect", logs, database_url=prefect_database, ui=prefect_ui,
                               env=prefect_env),
    )
    try:
        for service in servers.services:  # both start at once; then wait for each
            service.start(wait=False)
        for service in servers.services:
            service.wait_ready(timeout)
        yield servers
    finally:
        for service in reversed(servers.services):
            service.stop()
