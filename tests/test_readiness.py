"""Readiness checks that can fail: the service gets ready only after a delay.

Each test starts a process that becomes ready DELAY seconds after it starts
(it binds, listens, answers 200, prints its banner or writes its pid file
late) and asserts that ``start()`` took at least DELAY and that the
condition holds when it returns. An executor that skipped its check would
return at once, so these tests fail on it. For ``a & b``, one part holds at
once and the other only late (or never), so a combination that kept only
one part fails too. Local context and lab host alike.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import pytest
from conftest import PY, Place

import remoteexec as rx
from remoteexec import waits

#: How late each service gets ready; start() must take at least this long.
DELAY = 1.0
TIMEOUT = 20.0


def _timed_start(ex: rx.SimpleExecutor) -> float:
    started = time.monotonic()
    ex.start()
    return time.monotonic() - started


def _holds_on_host(place: Place, code: str) -> None:
    """Run ``code`` with the host's python: it must exit 0 (the condition holds there)."""
    r = place.host.run([PY, "-c", code], timeout=10)
    assert r.returncode == 0, r.stderr


def _check_late(_place: Place, ex: rx.SimpleExecutor, holds: Callable[[], None]) -> None:
    try:
        took = _timed_start(ex)
        assert took >= DELAY, "start() returned after %.3fs, before the service was ready" % took
        assert ex.running()
        holds()
    finally:
        ex.stop()


def test_unix_socket_waits_for_the_bind(place: Place) -> None:
    path = os.path.join(place.scratch, "late.sock")
    ex = rx.UnixSocketExecutor(
        place.cmd("after", DELAY, "unix", path), socket_name=path, on=place.host, timeout=TIMEOUT
    )
    connect = "import socket; s = socket.socket(socket.AF_UNIX); s.connect(%r)" % path
    _check_late(place, ex, lambda: _holds_on_host(place, connect))


def test_tcp_waits_for_the_listen(place: Place) -> None:
    port = place.free_port()
    ex = rx.TCPExecutor(
        place.cmd("after", DELAY, "http", "127.0.0.1", port),
        host="127.0.0.1",
        port=port,
        on=place.host,
        timeout=TIMEOUT,
    )
    connect = "import socket; socket.create_connection(('127.0.0.1', %d), 2)" % port
    _check_late(place, ex, lambda: _holds_on_host(place, connect))


def test_http_waits_for_the_status_not_the_port(place: Place) -> None:
    """The port accepts at once but answers 503 until DELAY: only an HTTP
    check (not a TCP one) waits long enough."""
    port = place.free_port()
    url = "http://127.0.0.1:%d/" % port
    ex = rx.HTTPExecutor(
        place.cmd("http-late", "127.0.0.1", port, DELAY), url=url, on=place.host, timeout=TIMEOUT
    )
    get = (
        "import urllib.request; r = urllib.request.urlopen(%r, timeout=2);"
        " assert r.status == 200, r.status" % url
    )
    _check_late(place, ex, lambda: _holds_on_host(place, get))


def test_output_waits_for_the_banner(place: Place) -> None:
    """Another line comes at once, the banner only after DELAY."""
    ex = rx.OutputExecutor(
        place.cmd("banner", "now serving", DELAY),
        banner="now serv",
        on=place.host,
        timeout=TIMEOUT,
    )

    def holds() -> None:
        assert "now serving" in ex.output_tail()

    _check_late(place, ex, holds)


def test_pid_waits_for_the_file(place: Place) -> None:
    path = os.path.join(place.scratch, "late.pid")
    ex = rx.PidExecutor(
        place.cmd("pidfile", path, DELAY), filename=path, on=place.host, timeout=TIMEOUT
    )

    def holds() -> None:
        with open(place.seen_from_master(path)) as f:  # a lab host's /tmp is its own
            assert int(f.read()) == ex.pid

    _check_late(place, ex, holds)


def test_all_of_waits_for_the_late_part(place: Place) -> None:
    """``a & b``: a (the TCP port) holds at once, b (the banner) after DELAY."""
    port = place.free_port()
    wait = waits.TCP("127.0.0.1", port) & waits.Banner("late ready")
    ex = rx.Executor(
        place.cmd("http-late", "127.0.0.1", port, DELAY), wait=wait, on=place.host, timeout=TIMEOUT
    )

    def holds() -> None:
        assert "late ready" in ex.output_tail()

    _check_late(place, ex, holds)


@pytest.mark.parametrize("never_first", [False, True], ids=["a&never", "never&a"])
def test_all_of_times_out_naming_the_part_that_never_holds(place: Place, never_first: bool) -> None:
    port = place.free_port()
    never = os.path.join(place.scratch, "never-written")
    holds, missing = waits.TCP("127.0.0.1", port), waits.File(never)
    wait = (missing & holds) if never_first else (holds & missing)
    ex = rx.Executor(
        place.cmd("http", "127.0.0.1", port), wait=wait, on=place.host, timeout=DELAY + 1.0
    )
    started = time.monotonic()
    with pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    assert time.monotonic() - started >= DELAY + 1.0
    text = str(info.value)
    assert "file %s does not exist" % never in text, text
    assert info.value.host == place.host.name
    assert not ex.running()
