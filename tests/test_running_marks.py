"""Running marks (worker.marks, worker.quarantine.RunningMarks): a mark is a store into the process's
mark file, which outlives a SIGKILL; the worker node publishes a dead process's mark to the real
Redis for the redelivered attempt, and a starting node publishes what dead processes left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from worker import marks
from worker.quarantine import Attempt, RunningMarks

ATTEMPT = Attempt(task_id="marks-task", attempt=0, worker="w", pid=1)


@pytest.fixture()
def client(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    for key in c.scan_iter(match=f"{redis_prefix}:marks*"):
        c.delete(key)
    c.close()


def _marks(client: redis.Redis, redis_prefix: str, where: Path) -> RunningMarks:
    return RunningMarks(client, f"{redis_prefix}:marks", ttl=600, where=where)


def _killed_while_marking(where: Path, prefix: str, task_id: str, delivery_ids: list[str]) -> int:
    """A process that marks ``delivery_ids`` in turn, then is killed with SIGKILL; its pid."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from worker.quarantine import Attempt, RunningMarks
        m = RunningMarks(None, {prefix!r}, ttl=600, where=Path({str(where)!r}))
        attempt = Attempt(task_id={task_id!r}, attempt=1, worker="w", pid=os.getpid())
        for d in {delivery_ids!r}:
            assert m.mark(attempt, d)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent)
    assert proc.wait(60) == -signal.SIGKILL
    return proc.pid


def test_a_mark_file_holds_the_current_record(tmp_path: Path) -> None:
    f = marks.MarkFile(tmp_path / "123")
    assert marks.read(f.path) is None  # created empty
    f.mark("p:running:t:0", "d-1")
    f.mark("p:running:t:0", "d-2")
    assert marks.read(f.path) == ("p:running:t:0", "d-2")
    f.clear()
    assert marks.read(f.path) is None
    f.mark("p:running:t:1", "d-3")
    assert marks.read(f.path) == ("p:running:t:1", "d-3")
    with pytest.raises(ValueError):
        f.mark("k" * 600, "d")
    f.close()
    assert not f.path.exists()
    assert marks.read(f.path) is None


def test_a_record_half_written_is_never_read(tmp_path: Path) -> None:
    f = marks.MarkFile(tmp_path / "124")
    f.mark("p:running:t:0", "d-1")
    # A process killed while writing its next record: the spare buffer holds part of it, the
    # current-buffer byte was not flipped yet.
    spare = 1 + (1 - f._current) * marks.BUFFER
    f._map[spare : spare + 12] = b"\x40\x00p:running:"
    assert marks.read(f.path) == ("p:running:t:0", "d-1")
    (tmp_path / "125").write_bytes(b"not a mark file")
    assert marks.read(tmp_path / "125") is None


def test_marking_sends_nothing_to_redis(tmp_path: Path) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    m = RunningMarks(unreachable, "p", ttl=60, where=tmp_path)
    assert m.mark(ATTEMPT, "d-1")
    assert marks.read(tmp_path / str(os.getpid())) == ("p:running:marks-task:0", "d-1")
    with capture_logs() as logs:
        assert m.read(ATTEMPT) is None  # Redis away: no attribution, no error
    assert any(e["event"] == "running_mark_failed" for e in logs)
    m.close()
    assert not (tmp_path / str(os.getpid())).exists()


def test_a_killed_process_mark_is_published_by_its_node(tmp_path: Path, client: redis.Redis,
                                                        redis_prefix: str) -> None:
    prefix = f"{redis_prefix}:marks"
    pid = _killed_while_marking(tmp_path, prefix, "task-a", ["d-1", "d-2", "d-3"])
    key = f"{prefix}:running:task-a:1"
    assert client.get(key) is None  # nothing reached Redis while the process ran
    # Another task's loss does not publish it.
    assert marks.publish_lost(client, pid, "task-b", 600, tmp_path) is None
    assert (tmp_path / str(pid)).exists()
    assert marks.publish_lost(client, pid, "task-a", 600, tmp_path) == "d-3"
    assert client.get(key) == b"d-3"
    assert 0 < client.ttl(key) <= 600
    assert not (tmp_path / str(pid)).exists()
    # The redelivered attempt reads it, and deletes it once it has ended.
    m = _marks(client, redis_prefix, tmp_path)
    again = Attempt(task_id="task-a", attempt=1, worker="w", pid=os.getpid())
    assert m.read(again) == "d-3"
    m.clear(again)
    assert client.get(key) is None
    m.close()


def test_a_starting_node_publishes_what_dead_processes_left(tmp_path: Path, client: redis.Redis,
                                                            redis_prefix: str) -> None:
    prefix = f"{redis_prefix}:marks"
    dead = _killed_while_marking(tmp_path, prefix, "task-c", ["d-9"])
    live = _marks(client, redis_prefix, tmp_path)  # this process: alive, its mark stays private
    assert live.mark(Attempt(task_id="task-d", attempt=0, worker="w", pid=os.getpid()), "d-10")
    (tmp_path / "not-a-pid").write_bytes(b"")
    assert marks.sweep(client, 600, tmp_path) == ["d-9"]
    assert client.get(f"{prefix}:running:task-c:1") == b"d-9"
    assert client.get(f"{prefix}:running:task-d:0") is None
    assert not (tmp_path / str(dead)).exists()
    assert (tmp_path / str(os.getpid())).exists()
    assert marks.sweep(client, 600, tmp_path) == []
    live.close()


def test_a_starting_node_publishes_what_the_layout_before_namespaces_left(
        tmp_path: Path, client: redis.Redis, redis_prefix: str) -> None:
    """A node killed before its upgrade left its files directly in the Redis's folder; the upgraded
    node, whose own folder is a PID namespace's inside it, publishes them too."""
    prefix = f"{redis_prefix}:marks"
    old = _killed_while_marking(tmp_path, prefix, "task-e", ["d-20", "d-21"])
    own = tmp_path / marks.pid_namespace()
    new = _killed_while_marking(own, prefix, "task-f", ["d-22"])
    assert sorted(marks.sweep(client, 600, own)) == ["d-21", "d-22"]
    assert client.get(f"{prefix}:running:task-e:1") == b"d-21"
    assert not (tmp_path / str(old)).exists() and not (own / str(new)).exists()
    assert own.is_dir()  # the folder itself is not a mark file


def test_a_session_forgets_what_its_dead_processes_left(tmp_path: Path) -> None:
    mine = _killed_while_marking(tmp_path, "run-1", "task-e", ["d-1"])
    other = _killed_while_marking(tmp_path, "run-2", "task-f", ["d-2"])
    idle = marks.MarkFile(tmp_path / "4194311")  # above any pid_max: dead, nothing running
    idle.close(remove=False)
    live = marks.MarkFile(tmp_path / str(os.getpid()))
    live.mark("run-1:running:task-g:0", "d-3")
    assert marks.forget("run-1", tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([str(other), str(os.getpid())])
    assert not (tmp_path / str(mine)).exists()
    live.close()


def test_each_redis_has_its_own_folder() -> None:
    a, b = marks.directory("redis://127.0.0.1:6379/0"), marks.directory("redis://127.0.0.1:6380/0")
    assert a != b and a.parent.parent == b.parent.parent and a.name == b.name == marks.pid_namespace()
    assert marks.directory("redis://127.0.0.1:6379/0") == a


def _can_unshare() -> None:
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no PID namespace can be made here: {probe.stderr.decode().strip()}")


# Run in a PID namespace of its own, as in a container: mark, wait until the other process has
# marked too, then read back what this process's file holds.
_IN_A_CONTAINER = """
import os, sys, time
from pathlib import Path
from worker import marks
url, name, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
where = marks.directory(url)
f = marks.MarkFile(marks.path_of(os.getpid(), where))
f.mark("p:running:t:0", name)
(ready / name).touch()
deadline = time.monotonic() + 60
while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
found = marks.read(marks.path_of(os.getpid(), where))
print(os.getpid(), where, found[1] if found else None)
"""


def test_processes_in_two_pid_namespaces_sharing_dev_shm_keep_their_own_marks(tmp_path: Path) -> None:
    """Two containers sharing /dev/shm run processes with the same ids: each keeps its own mark
    file, in its namespace's folder, and this namespace's sweep does not see theirs."""
    _can_unshare()
    url = f"redis://namespaces-{os.getpid()}-{tmp_path.name}/0"
    ready = tmp_path / "ready"
    ready.mkdir()
    container = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _IN_A_CONTAINER]
    procs = [subprocess.Popen([*container, url, name, str(ready)], stdout=subprocess.PIPE,
                              cwd=Path(__file__).parents[1])
             for name in ("d-A", "d-B")]
    try:
        outs = [p.communicate(timeout=120)[0].decode().split() for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        (pid_a, where_a, got_a), (pid_b, where_b, got_b) = outs
        assert pid_a == pid_b  # the same id in each namespace
        assert (got_a, got_b) == ("d-A", "d-B")
        assert where_a != where_b and str(marks.directory(url)) not in (where_a, where_b)
        assert Path(where_a).parent == Path(where_b).parent == marks.directory(url).parent
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(marks.directory(url).parent, ignore_errors=True)


def test_a_forked_process_writes_its_own_file(tmp_path: Path, client: redis.Redis, redis_prefix: str) -> None:
    m = _marks(client, redis_prefix, tmp_path)
    assert m.mark(ATTEMPT, "parent")
    pid = os.fork()
    if pid == 0:  # the child: marks, then dies without cleaning up
        try:
            m.mark(ATTEMPT, "child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert marks.read(tmp_path / str(pid)) == (f"{redis_prefix}:marks:running:marks-task:0", "child")
    assert marks.read(tmp_path / str(os.getpid())) == (f"{redis_prefix}:marks:running:marks-task:0", "parent")
    m.close()


# Run in a PID namespace of its own: mark, say so, wait for the word to go on, then end without
# cleaning up (os._exit: the mark file stays, with its record).
_CONTAINER_THAT_DIES = """
import os, sys, time
from pathlib import Path
from worker import marks
url, delivery_id, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
where = marks.directory(url)
f = marks.MarkFile(marks.path_of(os.getpid(), where))
f.mark("p-ns:running:t:0", delivery_id)
written = ready.with_suffix(".tmp")
written.write_text(str(where))
written.rename(ready)  # the test sees the whole path or no file
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
os._exit(0)
"""



def test_a_node_publishes_what_a_container_left_before_it_started_again(tmp_path: Path) -> None:
    """A container that shared /dev/shm ran in a PID namespace that is gone (it was started again in
    a new one): the node's sweep publishes what its dead processes left. A container that still
    runs keeps its mark, whatever its processes' ids mean here."""
    _can_unshare()
    url = f"redis://containers-{os.getpid()}-{tmp_path.name}/0"
    container = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _CONTAINER_THAT_DIES]
    procs, folders = [], []
    published: dict[str, str] = {}

    class Client:  # what the sweep publishes, kept here: this test's marks name no real Redis key
        def set(self, key: str, value: str, ex: int) -> None:
            published[key] = value

    try:
        for name in ("gone", "running"):
            ready, go = tmp_path / f"ready-{name}", tmp_path / f"go-{name}"
            procs.append(subprocess.Popen([*container, url, f"d-{name}", str(ready), str(go)],
                                          cwd=Path(__file__).parents[1]))
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            folders.append(Path(ready.read_text()))
        (tmp_path / "go-gone").touch()
        assert procs[0].wait(60) == 0
        gone, running = folders
        assert gone != running and gone.parent == running.parent == marks.directory(url).parent
        # A file of the version that held no lock, in the gone namespace: its id means nothing here.
        (gone / "4194311").write_bytes(bytes(1 + 2 * marks.BUFFER))
        # Swept from this namespace's folder, as a node that starts.
        assert marks.sweep(Client(), 600, marks.directory(url)) == ["d-gone"]
        assert published == {"p-ns:running:t:0": "d-gone"}
        assert sorted(p.name for p in gone.iterdir()) == ["4194311"]
        assert marks.read(next(running.iterdir())) == ("p-ns:running:t:0", "d-running")
        (gone / "4194311").unlink()
        assert marks.sweep(Client(), 600, marks.directory(url)) == []
        assert not gone.exists() and running.is_dir()  # an empty folder goes, a live one stays
    finally:
        (tmp_path / "go-running").touch()
        for p in procs:
            p.wait(60)
        shutil.rmtree(marks.directory(url).parent, ignore_errors=True)


_PARENT_AND_CHILD = """
import os, signal, sys, time
from pathlib import Path
from worker import marks
where, go = Path(sys.argv[1]), Path(sys.argv[2])
f = marks.MarkFile(marks.path_of(os.getpid(), where))
f.mark("p-fork:running:t:0", "d-parent")
started, running = os.pipe()
if os.fork() == 0:  # the child outlives its parent, which dies holding the mark
    os.write(running, b"!")  # its fork handlers have run by now
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)
os.read(started, 1)
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_forked_child_does_not_keep_its_parent_s_mark_alive(tmp_path: Path) -> None:
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", _PARENT_AND_CHILD, str(tmp_path), str(go)],
                            cwd=Path(__file__).parents[1], stdout=subprocess.PIPE)
    published: list[str] = []
    try:
        assert proc.stdout is not None
        parent = int(proc.stdout.readline())
        assert proc.wait(60) == -signal.SIGKILL and not marks.alive(parent)
        # Judged by the lock alone, as in another namespace's folder.
        assert marks._settle(tmp_path / str(parent), lambda found: bool(published.append(found[1])) or True,
                             own_namespace=False)
        assert published == ["d-parent"]
    finally:
        go.touch()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_new_process_waits_for_a_sweep_that_holds_its_file_name(tmp_path: Path) -> None:
    """A sweep removing a dead process's file holds its lock; a new process with the same id waits,
    then makes a new file instead of writing into the removed one."""
    import fcntl
    import threading

    path = tmp_path / "77"
    old = marks.MarkFile(path)
    old.mark("p:running:t:0", "d-old")
    old.close(remove=False)  # its process ended: the lock is free, the file stays
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the sweep's
    made: list[marks.MarkFile] = []
    thread = threading.Thread(target=lambda: made.append(marks.MarkFile(path)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive(), "the new process must wait for the sweep's lock"
    assert marks.read(path) == ("p:running:t:0", "d-old")  # nothing emptied under the sweep
    path.unlink()
    os.close(fd)
    thread.join(10)
    new = made[0]
    assert os.stat(path).st_ino == os.fstat(new._fd).st_ino
    new.mark("p:running:t:1", "d-new")
    assert marks.read(path) == ("p:running:t:1", "d-new")
    new.close()
