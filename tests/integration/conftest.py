"""Real ``celery worker`` processes against this machine's Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def akhbar_env(
    module_pg: str, redis_url: str, redis_prefix: str, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Environment for akhbar processes: a module-private database and Redis prefix."""
    prefix = f"{redis_prefix}-{request.module.__name__.rsplit('.', 1)[-1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env.update({
        "AKHBAR_DATABASE_URL": module_pg,
        "AKHBAR_REDIS_URL": redis_url,
        "AKHBAR_REDIS_PREFIX": prefix,
        "AKHBAR_LOG_FORMAT": "json",
        "AKHBAR_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        if "ready" in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout} s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def workers(
    akhbar_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two ``celery worker`` processes (prefork, one child each), like two machines."""
    logs = tmp_path_factory.mktemp("workers")
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    env = dict(akhbar_env, AKHBAR_LOG_LEVEL="INFO")
    for n in (1, 2):
        log_path = logs / f"w{n}.log"
        with log_path.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "--concurrency=1",
                 f"--hostname=w{n}@%h", "--queues=akhbar.live,akhbar.bulk", "--without-gossip",
                 "--without-mingle", "--loglevel=INFO"],
                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )
        procs.append((proc, log_path))
    try:
        for proc, log_path in procs:
            _wait_ready(proc, log_path)
        yield [p for p, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        client = redis.Redis.from_url(akhbar_env["AKHBAR_REDIS_URL"])
        for key in client.scan_iter(match=f"{akhbar_env['AKHBAR_REDIS_PREFIX']}*"):
            client.delete(key)


def run_akhbar(
    env: dict[str, str], *args: str, input: bytes | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``akhbar`` CLI as a user would (a separate process)."""
    return subprocess.run([sys.executable, "-m", "akhbar.cli", *args], cwd=ROOT, env=env, input=input,
                          capture_output=True, timeout=timeout, check=False)
