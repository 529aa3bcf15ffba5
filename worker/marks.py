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

Whether a file's process still runs is told by a lock, not by its process id: the process holds a
shared ``flock`` on its file for as long as it lives, and the kernel drops it however the process
ends. A sweep takes a file whose exclusive lock it can take as left by the dead. Unlike a process
id, the lock means the same in every PID namespace on the machine, so a node also publishes what a
container left that was started again in a new namespace (its old namespace's folder, beside the
node's own). A file written by a version that held no lock (one byte shorter) is judged by its
process id, in this namespace's folder only.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import xxhash

log = structlog.get_logger("akhbar.marks")

BUFFER = 512  # bytes per record buffer: a key of up to about 400 bytes and a delivery id
_LENGTH = struct.Struct("<H")
_SIZE = 1 + 2 * BUFFER
# A file whose process holds a lock on it has one more byte, after the buffers: its size tells a
# reader that the lock, not the process id, says whether its process lives (see the docstring).
_LOCKED_SIZE = _SIZE + 1
_NAMESPACE_PREFIX = "pidns-"


def pid_namespace() -> str:
    """This process's PID namespace, as a folder name ("pidns-4026531836"); "pidns-unknown" where
    the kernel does not show it."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return _NAMESPACE_PREFIX + "unknown"
    return _NAMESPACE_PREFIX + "".join(c for c in link if c.isdigit())


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
        fd = _open_locked(path)
        try:
            # Emptied only once locked: a sweep holding the lock of a dead process's file with
            # this name reads it first.
            os.ftruncate(fd, 0)
            os.ftruncate(fd, _LOCKED_SIZE)
            self._map = _map(path, fd)
        except BaseException:
            os.close(fd)
            raise
        # Kept open: the lock lives as long as this descriptor (and its copies in forked children,
        # which close theirs: see _close_inherited).
        self._fd = fd
        _HELD[fd] = os.getpid()
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
        if self._fd >= 0 and _HELD.get(self._fd) == os.getpid():
            del _HELD[self._fd]
            with contextlib.suppress(OSError):
                os.close(self._fd)  # the lock ends: a sweep may take the file from now on
        self._fd = -1


# Descriptors of the mark files this process opened, and the process that opened each.
_HELD: dict[int, int] = {}


def _close_inherited() -> None:
    """In a forked child: close the parent's mark-file descriptors, so that the parent's lock ends
    with the parent (closing a copy leaves the parent's own lock in place)."""
    pid = os.getpid()
    for fd, owner in list(_HELD.items()):
        if owner != pid:
            del _HELD[fd]
            with contextlib.suppress(OSError):
                os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)


def _map(path: Path, locked: int) -> mmap.mmap:
    """The file open as ``locked``, mapped through a descriptor of its own: an mmap keeps a duplicate
    of the descriptor it maps, and a duplicate shares the lock, which would then live as long as the
    map (in a forked child too)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino != os.fstat(locked).st_ino:
            raise OSError(f"the mark file at {path} was replaced while it was being made")
        return mmap.mmap(fd, _SIZE)
    finally:
        os.close(fd)


def _open_locked(path: Path) -> int:
    """Open (creating) ``path`` with this process's shared lock on it, sure that the name still
    leads to the locked file: a sweep that held the lock of a dead process's file of this name may
    have removed it meanwhile, and then a new file is made."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(f"could not lock a mark file at {path}")


def _record(data: bytes) -> tuple[str, str] | None:
    """The current record in a mark file's bytes: (Redis key, delivery id), or None."""
    if len(data) not in (_SIZE, _LOCKED_SIZE) or data[0] not in (0, 1):
        return None
    start = 1 + data[0] * BUFFER
    (length,) = _LENGTH.unpack_from(data, start)
    if not 0 < length <= BUFFER - _LENGTH.size:
        return None
    key, sep, delivery_id = data[start + _LENGTH.size : start + _LENGTH.size + length].decode(
        errors="replace").partition("\x00")
    return (key, delivery_id) if sep and key and delivery_id else None


def read(path: Path) -> tuple[str, str] | None:
    """The current record of a mark file: (Redis key, delivery id), or None (nothing running, no
    such file, or not a mark file)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    return _record(data)


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


def _settle(path: Path, take: Callable[[tuple[str, str] | None], bool], *,
            own_namespace: bool = True) -> bool:
    """If the process of the mark file ``path`` no longer runs: call ``take`` with its record, and
    remove the file when ``take`` says so. The file's lock is held throughout, so a new process of
    the same id waits to take the name until the file is gone. Whether it was removed.

    The process no longer runs when no one holds the file's lock; for a file of the version that
    held none, when it is in this namespace's folder and its process id does not run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size == _LOCKED_SIZE:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its process runs
        elif not (own_namespace and path.name.isdigit() and not alive(int(path.name))):
            return False
        if not take(_record(os.pread(fd, _LOCKED_SIZE, 0))):
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)  # drops the lock, if taken


def _mark_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.name.isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def publish_lost(client: Any, pid: int, task_id: str, ttl: int, where: Path | None = None) -> str | None:
    """Process ``pid`` died running ``task_id``: put its mark where the redelivered message reads it.
    The delivery id, or None when the process had marked nothing of that task (a mark of another
    task is left for its own death or the sweep)."""
    published: list[str] = []

    def take(found: tuple[str, str] | None) -> bool:
        if found is None:
            return True
        key, delivery_id = found
        if f":running:{task_id}:" not in key:
            return False
        client.set(key, delivery_id, ex=ttl)
        published.append(delivery_id)
        return True

    _settle(path_of(pid, where), take)
    return published[0] if published else None


def _other_namespaces(where: Path) -> list[Path]:
    """The other PID namespaces' folders beside the namespace folder ``where`` (containers that
    share its /dev/shm, or that ran here before being started again)."""
    try:
        return [p for p in where.parent.iterdir()
                if p.name.startswith(_NAMESPACE_PREFIX) and p != where and p.is_dir()]
    except FileNotFoundError:
        return []


def sweep(client: Any, ttl: int, where: Path | None = None) -> list[str]:
    """Publish the marks of every process on this machine that died without its worker node
    noticing (the node was killed with it), and remove their files; the delivery ids published.

    Also swept: the other PID namespaces' folders beside this one's, for the files whose lock no
    process holds (a container started again in a new namespace: its processes are gone), and the
    files of the layout before PID namespaces had folders of their own, directly in the Redis's
    folder (left by a node killed before its upgrade), taken to be of this namespace, as the nodes
    of that layout took them. A namespace's folder left empty is removed."""
    where = where or directory()
    published: list[str] = []

    def take(found: tuple[str, str] | None) -> bool:
        if found is not None:
            client.set(found[0], found[1], ex=ttl)
            published.append(found[1])
        return True

    namespaced = where.name.startswith(_NAMESPACE_PREFIX)
    for folder in [where, where.parent] if namespaced else [where]:
        for path in _mark_files(folder):
            _settle(path, take)
    for folder in _other_namespaces(where) if namespaced else []:
        for path in _mark_files(folder):
            _settle(path, take, own_namespace=False)
        with contextlib.suppress(OSError):  # not empty: a live process's file
            folder.rmdir()
    if published:
        log.warning("running_marks_swept", deliveries=published)
    return published


def forget(prefix: str, where: Path) -> int:
    """Remove the files that dead processes left with nothing running or with a mark under the Redis
    key prefix ``prefix`` (a test session's or a benchmark scenario's, whose keys are deleted when
    it ends); the number removed."""
    return sum(_settle(path, lambda found: found is None or found[0].startswith(f"{prefix}:"))
               for path in _mark_files(where))
