"""Running marks kept in memory the worker's death cannot take: one small file per pool process.

Before each delivery of a batch-mode attempt, a pool process records which one it is about to run
(see :class:`worker.quarantine.RunningMarks`). When the process dies, that record tells the
redelivered message which delivery to charge. It used to be a Redis ``SET`` per delivery, two a
delivery: a write on a TCP socket and a command Redis had to wake up for, which in the benchmark
cost the workers 2-12% of their CPU and Redis a third of its own (0.35 against 0.23-0.25 ms a
story, three alternated runs of 8,000 deliveries).

A mark is now a store into a shared memory map of a file of its own, named by its process id, in
``/dev/shm`` (memory, not disk) where there is one, else the temporary directory. Stores to a
shared mapping are in the kernel's page cache the moment they are made, so they outlive the
process however it ends (SIGKILL, a segfault, the out-of-memory killer) without a system call.
The record reaches Redis, under the key the redelivered message reads, only when a process has
died: the worker node's main process publishes the dead child's mark before it requeues the
message (:func:`publish_lost`, called by worker/requeue.py), and a worker node that starts
publishes the marks every dead process left on the machine (:func:`sweep`: a whole node killed and
started again on the same machine). A mark that is never published (the machine itself was lost,
or Redis was away then) only loses the attribution: the lost attempt's deliveries all become
suspects and run one at a time, which is slower, never less safe.

Each file holds two record buffers and, in its first byte, which one is current: a record is
written into the other buffer and then made current by that one-byte store, so a reader never sees
half of one.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import structlog
import xxhash

log = structlog.get_logger("akhbar.marks")

BUFFER = 512  # bytes per record buffer: a key of up to about 400 bytes and a delivery id
_LENGTH = struct.Struct("<H")
_SIZE = 1 + 2 * BUFFER


def pid_namespace() -> str:
    """This process's PID namespace, as a folder name ("pidns-4026531836"); "pidns-unknown" where
    the kernel does not show it."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "pidns-unknown"
    return "pidns-" + "".join(c for c in link if c.isdigit())


def directory(redis_url: str = "") -> Path:
    """Where this user's mark files for the Redis at ``redis_url`` live: ``/dev/shm`` when it is
    writable, else the temporary directory.

    One folder per Redis, so that a worker node sweeps only the marks meant for its own Redis
    (worker nodes of several deployments may share a machine), and in it one per PID namespace: a
    file is named by its process id, which means nothing in another namespace. Containers that share
    ``/dev/shm`` (``ipc: host``, a shared memory volume) each run their own namespace, where the same
    ids recur; without it two processes would map one file, and a node would take another
    container's live processes for dead ones and publish their marks."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    url_folder = xxhash.xxh64_hexdigest(redis_url.encode())
    return base / f"akhbar-running-{os.getuid()}" / url_folder / pid_namespace()


def path_of(pid: int, where: Path | None = None) -> Path:
    return (where or directory()) / str(pid)


class MarkFile:
    """One process's mark file, mapped in memory (created empty, replacing any left by a process
    with the same id)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self.path = path
        self._current = 0

    def write(self, record: bytes) -> None:
        """Make ``record`` the file's current record."""
        if len(record) > BUFFER - _LENGTH.size:
            raise ValueError(f"a mark of {len(record)} bytes does not fit in {BUFFER - _LENGTH.size}")
        spare = 1 - self._current
        start = 1 + spare * BUFFER
        self._map[start : start + _LENGTH.size + len(record)] = _LENGTH.pack(len(record)) + record
        self._map[0] = spare
        self._current = spare

    def mark(self, key: str, delivery_id: str) -> None:
        """Record that ``delivery_id`` runs now, under the Redis key its attempt's mark has."""
        self.write(f"{key}\x00{delivery_id}".encode())

    def clear(self) -> None:
        """Nothing runs now."""
        self.write(b"")

    def close(self, *, remove: bool = True) -> None:
        with contextlib.suppress(Exception):
            self._map.close()
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def read(path: Path) -> tuple[str, str] | None:
    """The current record of a mark file: (Redis key, delivery id), or None (nothing running, no
    such file, or not a mark file)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    if len(data) != _SIZE or data[0] not in (0, 1):
        return None
    start = 1 + data[0] * BUFFER
    (length,) = _LENGTH.unpack_from(data, start)
    if not 0 < length <= BUFFER - _LENGTH.size:
        return None
    key, sep, delivery_id = data[start + _LENGTH.size : start + _LENGTH.size + length].decode(
        errors="replace").partition("\x00")
    return (key, delivery_id) if sep and key and delivery_id else None


def _publish(client: Any, path: Path, ttl: int, task_id: str | None) -> str | None:
    """Publish the mark in ``path`` (only if it names ``task_id``'s attempt, when given), then
    remove the file; the delivery id published."""
    found = read(path)
    if found is not None and task_id is not None and f":running:{task_id}:" not in found[0]:
        return None  # another task's: left for its own death or the sweep
    published = None
    if found is not None:
        key, delivery_id = found
        client.set(key, delivery_id, ex=ttl)
        published = delivery_id
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return published


def publish_lost(client: Any, pid: int, task_id: str, ttl: int, where: Path | None = None) -> str | None:
    """Process ``pid`` died running ``task_id``: put its mark where the redelivered message reads it.
    The delivery id, or None when the process had marked nothing of that task."""
    return _publish(client, path_of(pid, where), ttl, task_id)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _left_by_the_dead(folder: Path) -> list[Path]:
    """The mark files in ``folder`` of processes that no longer run."""
    try:
        return [p for p in folder.iterdir() if p.name.isdigit() and not alive(int(p.name))]
    except FileNotFoundError:
        return []


def sweep(client: Any, ttl: int, where: Path | None = None) -> list[str]:
    """Publish the marks of every process on this machine that died without its worker node
    noticing (the node was killed with it), and remove their files; the delivery ids published.

    Also swept: the files of the layout before PID namespaces had folders of their own, directly
    in the Redis's folder (left by a node killed before its upgrade). Their processes are taken to
    have run in this namespace, as the nodes of that layout took them."""
    where = where or directory()
    folders = [where]
    if where.name.startswith("pidns-"):
        folders.append(where.parent)
    published = [delivery_id for folder in folders for path in _left_by_the_dead(folder)
                 if (delivery_id := _publish(client, path, ttl, None)) is not None]
    if published:
        log.warning("running_marks_swept", deliveries=published)
    return published


def forget(prefix: str, where: Path) -> int:
    """Remove the files that dead processes left with nothing running or with a mark under the Redis
    key prefix ``prefix`` (a test session's or a benchmark scenario's, whose keys are deleted when
    it ends); the number removed."""
    removed = 0
    for path in _left_by_the_dead(where):
        found = read(path)
        if found is None or found[0].startswith(f"{prefix}:"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
