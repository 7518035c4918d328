"""Heavy jobs in a child process of their own, which dies with the server that started it.

Why a process and not a thread: a job that reads a 200,000-parcel delivery holds its features,
its staging buffers and the libraries that parse them (GDAL, shapely, pyproj) while it runs; as
a thread of the server, all of that stayed in the server's resident memory (416 MiB during an
HTTP ingest of one such county, issue 16), and Python hands little of it back when the job
ends. A child started with ``python -m geobase.jobs_process`` imports only what the job needs,
and its memory is the kernel's to reclaim when it exits; the server stays near its idle size.

What stays the same: a job's state lives in ``catalog.jobs`` (:mod:`geobase.jobs`), written by
the job itself on its own connections, so status, progress, the result and the orphan sweep at
start-up do not care which process runs it; the job's work commits in one transaction, so a
killed child leaves the previous version, as a killed thread did.

Why the child dies with its parent: a server that is killed (SIGKILL, the OOM killer) must not
leave a job behind that commits a version later, after the next server has already marked that
job failed (:func:`geobase.jobs.fail_orphans_sync`) and a client has resubmitted it. The child
asks the kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``, Linux), and exits
at once if its parent is already gone by then. The kernel sends that signal when the *thread*
that started the child ends, not the process: so every child is started by one long-lived
launcher thread (:class:`_Launcher`), never by a request's worker thread that may be retired
while the job runs. Where ``prctl`` is not available, a watcher thread in the child polls its
parent instead.

The job is named ``"module:function"`` and its arguments are pickled to the child's stdin (never
on the command line, where ``ps`` would show a database URL with its password).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import importlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: prctl(2) option: the signal a process gets when its parent (thread) ends
PR_SET_PDEATHSIG = 1
#: how often the fallback watcher (no prctl) checks that the parent is alive
WATCH_INTERVAL_S = 0.2


class _Launcher:
    """The one thread that starts job children (see the module docstring: the parent-death
    signal follows the thread that forked the child). Started on first use, lives as long as
    the process; callers wait for the started :class:`subprocess.Popen`."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, argv: list[str], payload: bytes) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="job-launcher", daemon=True)
                self._thread.start()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((argv, payload, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            argv, payload, done = self._requests.get()
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, close_fds=True)
                try:
                    proc.stdin.write(payload)
                    proc.stdin.close()
                except OSError:  # the child died at once; its exit code tells the reaper why
                    pass
                done.set_result(proc)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                done.set_exception(exc)


_LAUNCHER = _Launcher()


def spawn(target: str, *args: Any, on_exit: Callable[[int], None] | None = None, name: str = "job",
          **kwargs: Any) -> subprocess.Popen:
    """Run ``target`` (``"package.module:function"``) with these arguments in a child process
    that dies with this one; ``on_exit(returncode)`` is called from a reaper thread when the
    child has ended (0: the function returned; negative: killed by that signal). The arguments
    must pickle (settings, paths, plain data)."""
    module, _, func = target.partition(":")
    if not module or not func:
        raise ValueError(f"job target {target!r} is not 'module:function'")
    payload = pickle.dumps((target, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    argv = [sys.executable, "-m", "geobase.jobs_process", str(os.getpid())]
    proc = _LAUNCHER.start(argv, payload)

    def reap() -> None:
        code = proc.wait()
        if code != 0:
            log.warning("job process %s (%s) ended with %s", proc.pid, name, code)
        if on_exit is not None:
            try:
                on_exit(code)
            except Exception:  # a reaper must never die with an exception nobody sees
                log.exception("after job process %s (%s) ended", proc.pid, name)

    threading.Thread(target=reap, name=f"reap-{name}", daemon=True).start()
    return proc


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` ends (prctl), or a watcher thread that exits when it
    has; exits at once when the parent is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:  # the parent went before the signal was armed
        os._exit(70)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str]) -> int:
    """The child: arm the parent-death signal, read the job from stdin, run it."""
    _die_with_parent(int(argv[0]))
    target, args, kwargs = pickle.load(sys.stdin.buffer)
    logging.basicConfig(level=logging.WARNING)
    _resolve(target)(*args, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
