"""Ctrl-C, SIGTERM and SIGHUP (what `timeout`, schedulers and `docker stop` send) all stop a run the same
way: the engine is told to stop between two steps, the partial output is removed, and the command
exits with 128 + the signal's number, as shells expect."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

import click

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """Raised in the main thread by a stop signal; a BaseException so that no ``except Exception`` keeps it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stop_on_signals():
    """Yields the event the engine watches; a stop signal sets it and unwinds the main thread (removing partial
    files on the way), then the process exits with 128 + signal number."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield stop
        return

    caught: list[int] = []

    def handler(signum, _frame) -> None:
        stop.set()
        if caught:
            return  # already unwinding: a second signal must not interrupt the clean-up
        caught.append(signum)
        raise Stopped(signum)

    previous = {number: signal.signal(number, handler) for number in SIGNALS}
    try:
        yield stop
    except Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        click.echo(f"\nstopped by {name}; no output was written", err=True)
        sys.exit(128 + stopped.signum)
    finally:
        for number, action in previous.items():
            signal.signal(number, action)
