"""Private servers and workers for the fault tier, and the accounting of a run.

Every fault test runs against its own ``redis-server`` and its own PostgreSQL cluster (own ports,
own data directories, started from the installed binaries), so it can kill and restart them
without touching the machine's shared services, and its own ``celery worker`` processes. The
servers run with production's security defaults: Redis with the ACL file of ``docker/`` (the
application user cannot run admin commands) and ``noeviction``, PostgreSQL with password
authentication, an application role without DDL rights, and a separate migration role.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("AKHBAR_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# Short timeouts so the tier fits in CI; production values and why are in akhbar/settings.py and
# the README. The visibility timeout must stay above the hard time limit (see worker/app.py).
TIER_SETTINGS = {
    "AKHBAR_VISIBILITY_TIMEOUT": "10",
    "AKHBAR_TASK_SOFT_TIME_LIMIT": "6",
    "AKHBAR_TASK_TIME_LIMIT": "8",
    "AKHBAR_DELIVERY_TIME_LIMIT": "2",
    # A first attempt in a batch: max(0.5 s, 20 x the 99th percentile of recent deliveries' times);
    # a story's own work takes 0.3 to 30 ms here (100 ms at most under a load of 5 on 2 cores).
    "AKHBAR_FIRST_ATTEMPT_TIME_LIMIT": "0.5",
    "AKHBAR_UNACKED_RESTORE_INTERVAL": "1",
    "AKHBAR_RETRY_BACKOFF_MAX": "4",
    "AKHBAR_MAX_TRANSIENT_RETRIES": "40",
    "AKHBAR_BATCH_SIZE": "25",
    "AKHBAR_RECONCILE_GRACE": "6",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{cmd[0]} failed ({result.returncode}): {result.stdout[-1500:]} {result.stderr[-1500:]}"
        )
    return result


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) of process ``pid``, of its children still running and of the
    children it has reaped: a pool process killed and replaced, or a PostgreSQL backend that has
    exited, still counts. 0 if ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        children = root.children()
    except psutil.Error:
        return 0.0
    for child in children:
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout} s")


# --- Redis -------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server without persistence, with the production ACL file and noeviction."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.app_password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_acl()

    def _write_acl(self) -> None:
        # docker/redis-users.acl with this run's password hash, plus an admin user for the harness.
        digest = hashlib.sha256(self.app_password.encode()).hexdigest()
        lines = []
        for line in (ROOT / "docker" / "redis-users.acl").read_text().splitlines():
            if line.startswith("user akhbar "):
                parts = [("#" + digest) if p.startswith("#") and len(p) == 65 else p for p in line.split()]
                line = " ".join(parts)
            lines.append(line)
        lines.append(f"user harness on >{self.admin_password} ~* &* +@all")
        (self.dir / "users.acl").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """The application user's URL (what workers and producers use)."""
        return f"redis://akhbar:{self.app_password}@127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username="harness",
            password=self.admin_password,
            socket_timeout=10,
        )

    def app_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            # Production's redis.conf (noeviction, ACL file), minus persistence: a restart loses
            # every queued and unacknowledged message, the worst case the reconciler must cover.
            [
                REDIS_SERVER,
                str(ROOT / "docker" / "redis.conf"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--aclfile",
                str(self.dir / "users.acl"),
                "--maxmemory",
                "512mb",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return bool(self.admin().ping())
            except redis.RedisError:
                return False

        _wait(up, 20, "redis-server")

    def kill(self) -> None:
        """SIGKILL: everything in memory (queued and unacknowledged messages) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()


# --- PostgreSQL --------------------------------------------------------------------------------


class PostgresCluster:
    """A private PostgreSQL cluster: password authentication on TCP, an owner role that migrates,
    an application role with only row rights (the production layout of docker/postgres-roles.sh)."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.port = free_port()
        self.app_password = secrets.token_hex(16)
        self.migrator_password = secrets.token_hex(16)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self.log = self.dir / "postgres.log"

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return _run(["runuser", "-u", "postgres", "--", *cmd])

    def init(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        self.start()
        self.psql(
            "postgres",
            f"""
            CREATE ROLE akhbar_migrator LOGIN PASSWORD '{self.migrator_password}';
            CREATE ROLE akhbar_app LOGIN PASSWORD '{self.app_password}';
        """,
        )

    def start(self) -> None:
        # fsync off: a killed server loses nothing the OS already has, and the tier never crashes
        # the machine. synchronous_commit stays on: an acknowledged commit must survive a kill.
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c full_page_writes=off",
            "start",
        )

    def cpu_seconds(self) -> float:
        """CPU time of the server: the postmaster, its backends and those that have exited."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        return tree_cpu_seconds(pid)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )

    def psql(self, db: str, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser over the private socket (local connections trust the OS user)."""
        import psycopg

        with psycopg.connect(
            host=str(self.sock),
            port=self.port,
            user="postgres",
            dbname=db,
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        self.psql("postgres", f'CREATE DATABASE "{name}" OWNER akhbar_migrator')
        self.psql(
            name,
            """
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            ALTER SCHEMA public OWNER TO akhbar_migrator;
            GRANT USAGE ON SCHEMA public TO akhbar_app;
            ALTER DEFAULT PRIVILEGES FOR ROLE akhbar_migrator IN SCHEMA public
              GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO akhbar_app;
            ALTER DEFAULT PRIVILEGES FOR ROLE akhbar_migrator IN SCHEMA public
              GRANT USAGE, SELECT ON SEQUENCES TO akhbar_app;
        """,
        )

    def clone_database(self, template: str, name: str) -> None:
        self.psql("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER akhbar_migrator')

    def url(self, db: str, role: str = "akhbar_app") -> str:
        password = self.app_password if role == "akhbar_app" else self.migrator_password
        return f"postgresql+psycopg://{role}:{password}@127.0.0.1:{self.port}/{db}"


# --- workers -----------------------------------------------------------------------------------


class Worker:
    """One ``celery worker`` process (prefork) with its pool children, in its own process group."""

    def __init__(self, name: str, env: dict[str, str], logs: Path, concurrency: int = 1) -> None:
        self.name = name
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> Worker:
        self.starts += 1
        with self.log_path.open("ab") as fh:
            fh.write(f"\n=== start {self.starts} ===\n".encode())
            fh.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.celery",
                    "worker",
                    f"--concurrency={self.concurrency}",
                    f"--hostname={self.name}@%h",
                    "--pool=prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=INFO",
                    "--queues=akhbar.live,akhbar.bulk",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        marker = f"=== start {self.starts} ==="

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            text = self.log_path.read_text(errors="replace")
            return "ready" in text[text.rfind(marker) :] and len(self.children()) >= self.concurrency

        _wait(ready, timeout, f"worker {self.name}", 0.2)

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stuck_report(self) -> str:
        """What a worker that does not stop is doing: its processes' states, then the stacks of the
        main process's threads (Celery's SIGUSR1 handler writes them to the log) and of its pool
        children (SIGUSR2, see worker.tasks), then the log's tail."""
        lines = []
        for proc in [psutil.Process(self.pid), *self.children()]:
            with contextlib.suppress(psutil.Error):
                lines.append(f"pid {proc.pid} {proc.status()} {' '.join(proc.cmdline())[:120]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)
        for child in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGUSR2)
        time.sleep(2)
        return "\n".join(lines) + "\n" + self.tail(12000)

    def log_lines(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (other lines are skipped)."""
        out = []
        for line in self.log_path.read_bytes().splitlines():
            if line.startswith(b"{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the main process and its pool children."""
        total = 0
        try:
            procs = [psutil.Process(self.pid), *self.children()]
        except psutil.NoSuchProcess:
            return 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def cpu_seconds(self) -> float:
        """CPU time of the worker: its main process and pool processes, killed ones included."""
        return tree_cpu_seconds(self.pid) if self.proc is not None else 0.0

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the main process and its children at once."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), escalating to SIGKILL."""
        if not self.alive():
            return
        assert self.proc is not None
        self.signal_group(signal.SIGCONT)
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Orphaned pool children of a killed main process.
        self.signal_group(signal.SIGKILL)


# --- the whole environment of one test ---------------------------------------------------------


@dataclass
class Env:
    """One fault test's servers, database, settings and workers."""

    redis: RedisServer
    pg: PostgresCluster
    db: str
    logs: Path
    extra: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.pg.url(self.db)

    def environ(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
        env.update(TIER_SETTINGS)
        env.update(
            {
                "AKHBAR_DATABASE_URL": self.database_url,
                "AKHBAR_REDIS_URL": self.redis.url,
                "AKHBAR_REDIS_PREFIX": "akhbar",
                "AKHBAR_LOG_FORMAT": "json",
                "AKHBAR_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra)
        env.update(overrides)
        return env

    def settings(self, **overrides: Any) -> Any:
        from akhbar.settings import Settings

        values: dict[str, Any] = {k.removeprefix("AKHBAR_").lower(): v for k, v in TIER_SETTINGS.items()}
        values.update({k.removeprefix("AKHBAR_").lower(): v for k, v in self.extra.items()})
        values.update(
            database_url=self.database_url, redis_url=self.redis.url, redis_prefix="akhbar", log_format="json"
        )
        values.update(overrides)
        return Settings(**values)

    def start_workers(self, n: int = 2, concurrency: int = 1, **env: str) -> list[Worker]:
        started = [
            Worker(f"w{len(self.workers) + i + 1}", self.environ(**env), self.logs, concurrency)
            for i in range(n)
        ]
        for w in started:
            w.start(wait=False)
        # Known before they are ready: they may take messages while the others start, so a meter
        # reading env.workers sees them from their first moment, and teardown stops them even if
        # one never becomes ready.
        self.workers.extend(started)
        for w in started:
            w.wait_ready()
        return started

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()

    def cli(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[bytes]:
        """Run the akhbar CLI as a user would (a separate process)."""
        return subprocess.run(
            [sys.executable, "-m", "akhbar.cli", *args],
            cwd=ROOT,
            env=self.environ(**env),
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def cli_background(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"cli-{args[0]}.log").open("ab") as fh:
            return subprocess.Popen(
                [sys.executable, "-m", "akhbar.cli", *args],
                cwd=ROOT,
                env=self.environ(**env),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


class Servers:
    """The tier's private redis-server and PostgreSQL cluster, and a migrated template database."""

    TEMPLATE = "akhbar_template"

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="akhbar-faults-"))
        os.chmod(self.base, 0o755)
        self.redis = RedisServer(self.base)
        self.pg = PostgresCluster(self.base)
        self._count = 0

    def start(self) -> Servers:
        self.redis.start()
        self.pg.init()
        self.pg.create_database(self.TEMPLATE)
        from models.session import upgrade

        # Migrations run as the owner role; everything else runs as the application role.
        upgrade(self.pg.url(self.TEMPLATE, role="akhbar_migrator"))
        from models.session import _engines

        for key in [k for k in _engines if self.TEMPLATE in k[0]]:
            _engines.pop(key).dispose()
        return self

    def new_env(self, name: str, extra: dict[str, str] | None = None) -> Env:
        self._count += 1
        db = f"t{self._count}_{name}"[:60]
        self.pg.clone_database(self.TEMPLATE, db)
        # A clean broker per test: this Redis is ours alone.
        self.redis.admin().flushall()
        logs = self.base / "logs" / db
        logs.mkdir(parents=True)
        return Env(redis=self.redis, pg=self.pg, db=db, logs=logs, extra=dict(extra or {}))

    def close(self) -> None:
        from worker import marks

        self.redis.stop()
        self.pg.stop("immediate")
        # The mark files of the processes the scenarios killed, meant for this tier's own Redis.
        shutil.rmtree(marks.directory(self.redis.url).parent, ignore_errors=True)
        if os.environ.get("AKHBAR_FAULTS_KEEP"):
            print(f"fault tier files kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
