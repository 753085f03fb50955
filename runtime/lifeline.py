"""Child processes end with their parent, however the parent ends (SIGKILL included).

Two kinds of process are started for ``vsr-run --workers N`` (:mod:`runtime.workers`): the fork
server, a fresh interpreter that imports the worker's code once, and the workers it forks. Either
could outlive a parent killed with SIGKILL (which runs no clean-up): a worker would finish its
segment and then wait forever, holding its memory and its GPU; the fork server would go on importing
for seconds before it notices. So:

* a worker calls :func:`die_with_parent` first thing;
* the fork server imports this module first (it heads the fork server's preload list, see
  :func:`runtime.workers.worker_context`), which asks the kernel to end it with its parent
  (Linux; elsewhere the fork server ends when it reads the end of its parent's pipe, after its
  imports).

Importing this module does something only in a fork server (:func:`_in_fork_server`).
Plain Python: no torch, no onnx.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading

#: prctl(2) option: the signal a process gets when the thread that started it ends (Linux).
_PR_SET_PDEATHSIG = 1


def _kill_me_with_parent() -> None:
    """Linux: have the kernel send this process SIGKILL the moment its parent ends (``prctl``), which
    also stops a process busy inside a library call; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_parent() -> None:
    """In a child process: end this process when its parent ends, however the parent ends.

    On Linux the kernel sends SIGKILL the moment the parent goes (``prctl(PR_SET_PDEATHSIG)``). On
    every platform a daemon thread waits on :func:`multiprocessing.parent_process`'s sentinel (a
    pipe the parent holds open; a process handle on Windows) and ends the process when it closes.
    A parent already gone before this ran ends the process here.
    """
    _kill_me_with_parent()
    parent = mp.parent_process()
    if parent is None:
        return
    if not parent.is_alive():
        os._exit(1)

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="vsr-parent-watch", daemon=True).start()


#: Environment variable through which a process that starts a fork server tells it its process id
#: (:func:`announce_parent`): a fork server that finds another parent was orphaned while it started.
PARENT_VARIABLE = "VSR_FORK_SERVER_PARENT"


def announce_parent() -> None:
    """Before a fork server is started from this process: let it know who its parent is."""
    os.environ[PARENT_VARIABLE] = str(os.getpid())


def _in_fork_server() -> bool:
    """Whether this process is a :mod:`multiprocessing` fork server importing its preload list
    (:func:`multiprocessing.forkserver.main` is running)."""
    if sys.argv != ["-c"] or "multiprocessing.forkserver" not in sys.modules:
        return False
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


def _guard_fork_server() -> None:
    """End this fork server with its parent: at once by the kernel's signal (Linux), and here if the
    parent is already gone (it died before the signal was asked for, and this process was handed
    to another). No watch thread: the fork server forks its workers and must do so with one
    thread. Elsewhere than Linux a fork server whose parent dies later ends when it has done its
    imports and read the end of its parent's pipe (a worker request already sent is served first,
    and that worker ends at once, its parent being gone).
    """
    _kill_me_with_parent()
    expected = os.environ.get(PARENT_VARIABLE, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)


if _in_fork_server():
    _guard_fork_server()
