"""A real local Ray head on 127.0.0.1 for tests: every port picked free, its own temp dir, and stopped
afterwards by signalling the process group this module started (never ``ray stop``, which would end
every Ray process on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 120


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _free_range(width: int) -> int:
    """The first port of ``width`` consecutive free ones (Ray's worker ports)."""
    for _ in range(50):
        start = _free_ports(1)[0]
        if start + width > 65000:
            continue
        try:
            probes = []
            for port in range(start, start + width):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((HOST, port))
                probes.append(sock)
            return start
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
    raise RuntimeError("no run of free ports for Ray's workers")


@contextmanager
def ray_head(cpus: int = 2) -> Iterator[str]:
    """Start ``ray start --head --block`` on loopback; yields its address (``127.0.0.1:PORT``)."""
    ray = Path(sys.executable).with_name("ray")
    port, node_manager, object_manager, agent_listen, agent_grpc, runtime_env, metrics = _free_ports(7)
    workers = _free_range(20)
    temp = tempfile.mkdtemp(prefix="qpray", dir="/tmp")  # Ray's socket paths must stay short
    command = [
        str(ray), "start", "--head", "--block", "--node-ip-address", HOST, "--port", str(port),
        "--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats",
        "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
        "--dashboard-agent-listen-port", str(agent_listen),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
        "--metrics-export-port", str(metrics), "--min-worker-port", str(workers),
        "--max-worker-port", str(workers + 19), "--temp-dir", temp,
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"{HOST}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if head.poll() is not None:
                raise RuntimeError(
                    f"ray start exited {head.returncode}: {(Path(temp) / 'head.log').read_text()[-2000:]}"
                )
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"the Ray head did not listen on {address} within {START_TIMEOUT_S} s")
        yield address
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)  # the group this module started: the head and its daemons
            head.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
        log.close()
        time.sleep(1)
        with suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # any daemon that outlived the head's own shutdown
        shutil.rmtree(temp, ignore_errors=True)
