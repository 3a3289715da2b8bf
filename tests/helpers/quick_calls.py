"""Functions for the quick-call and fan-out tests (runs on lab hosts: stdlib
and remoteexec.target only)."""

import os
import threading

from remoteexec.target.quick import quick


@quick
def where(value: int) -> list:
    """The thread it ran on, and ``value`` back."""
    return [threading.current_thread().name, value]


def where_unmarked(value: int) -> list:
    """The same, without the quick mark."""
    return [threading.current_thread().name, value]


@quick
def fails(text: str) -> None:
    raise KeyError(text)


def pid_and(value: int) -> list:
    """The context's pid, and ``value`` back."""
    return [os.getpid(), value]


def thread_names() -> list:
    """The names of the context's threads, sorted."""
    return sorted(t.name for t in threading.enumerate())
