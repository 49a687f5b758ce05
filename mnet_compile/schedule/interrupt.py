"""Ctrl-C during tuning: stop at the next safe point instead of raising inside TVM's native code.

MetaSchedule calls this project's Python builder, runner, rules and callbacks from C++; a KeyboardInterrupt
raised in one of them unwinds through C++ frames and ends as `RuntimeError:` or a segfault. Inside
`deferred()` the first Ctrl-C only sets a flag: the builder and runner skip the candidates not yet measured,
the task scheduler picks no further task, and `check()` raises KeyboardInterrupt where Python is in control.
A second Ctrl-C quits at once (exit code 130): records are appended one line at a time, and a line cut short
is dropped (and reported) when the work folder is opened again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

INTERRUPTED = "interrupted (Ctrl-C): not measured"  # the error message of candidates skipped after Ctrl-C

_state = {"requested": False, "active": False}


def requested() -> bool:
    """True once Ctrl-C was pressed inside deferred()."""
    return _state["requested"]


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (call where no C++ frame is below)."""
    if _state["requested"]:
        raise KeyboardInterrupt


@contextmanager
def deferred(hint: str = "", log=None):
    """Defer Ctrl-C (SIGINT) to the checks above; `hint` is printed if a second Ctrl-C quits at once."""
    log = log or (lambda message: print(message, file=sys.stderr))
    if threading.current_thread() is not threading.main_thread() or _state["active"]:
        yield
        return

    def handler(signum, frame):
        if _state["requested"]:
            log(f"interrupted: quitting now{'; ' + hint if hint else ''}")
            sys.stderr.flush()
            os._exit(130)
        _state["requested"] = True
        log("\ninterrupted: stopping after the current candidate (Ctrl-C again to quit at once)")

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. a background job: Ctrl-C is not ours to take
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    _state.update(requested=False, active=True)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state["active"] = False
        if _state["requested"]:
            _state["requested"] = False
            raise KeyboardInterrupt
