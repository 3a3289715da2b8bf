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

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from conftest import PY, Place, need_tarantool

import remoteexec as rx
from remoteexec import waits
from remoteexec.lab import free_port
from remoteexec.tarantool.config import box_cfg_for, render_init_lua
from remoteexec.tarantool.scripts import box_status_lua
from remoteexec.target import tarantool as tt
from remoteexec.target.tarantool.instance import UNKNOWN_UUIDS

#: How late each service gets ready; start() must take at least this long.
DELAY = 1.0
TIMEOUT = 20.0
#: The box status Lua the master sends with every box_status call.
BOX_STATUS = box_status_lua()


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


# -- a tarantool member's readiness: one long poll per layer change ------------------


@contextlib.contextmanager
def _tarantool(**box_cfg: Any) -> Iterator[Tuple[subprocess.Popen[bytes], str]]:
    """A tarantool started from remoteexec's init.lua (box_cfg_for's defaults
    plus ``box_cfg``) in a short directory: (its process, its probe socket).
    Killed by pid and removed afterwards."""
    root = tempfile.mkdtemp(prefix="rxr-", dir="/tmp")
    sock = os.path.join(root, "p.sock")
    cfg = box_cfg_for((2, 6, 0), listen="127.0.0.1:0", work_dir=root, **box_cfg)
    with open(os.path.join(root, "init.lua"), "w", encoding="utf-8") as f:
        f.write(render_init_lua(box_cfg=cfg, probe_socket=sock, replication_user="guest"))
    proc = subprocess.Popen(
        [need_tarantool(), os.path.join(root, "init.lua")],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc, sock
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _status_when(sock: str, holds: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
    """box_status once ``holds(status)``, polled within TIMEOUT (bounded by count too)."""
    deadline = time.monotonic() + TIMEOUT
    status: Dict[str, Any] = {}
    for _ in range(int(TIMEOUT / 0.01)):
        status = tt.box_status(sock, BOX_STATUS, 1.0)
        if holds(status) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert holds(status), status
    return status


def test_box_status_long_poll_answers_when_the_layer_changes() -> None:
    """``box_status(hold=...)`` waits inside tarantool while the layer is
    ``since`` and answers as soon as it changes: not at once (a probe every
    few ms is what it replaces), not after the whole hold (a missed change)."""
    with _tarantool() as (_, sock):
        _status_when(sock, lambda s: bool(s.get("app_done")))
        # No change within the hold: it answers after the hold, with the status.
        started = time.monotonic()
        held = tt.box_status(sock, BOX_STATUS, 5.0, hold=0.3, since="ready")
        took = time.monotonic() - started
        assert held["ok"] and held["status"] == "running", held
        assert 0.3 <= took < 0.3 + DELAY, took
        # Back to layer "app"; the app finishes 0.3 s later: the poll answers then.
        assert tt.probe(sock, "rawset(_G, 'rx_app_done', false)")["ok"]
        done = threading.Timer(0.3, tt.probe, (sock, "rawset(_G, 'rx_app_done', true)"))
        started = time.monotonic()
        done.start()
        try:
            changed = tt.box_status(sock, BOX_STATUS, 10.0, hold=5.0, since="app")
        finally:
            done.join(10)
        took = time.monotonic() - started
        assert changed["ok"] and changed["app_done"] is True, changed
        assert 0.3 <= took < 0.3 + DELAY, took
        # A layer other than `since` already: no wait at all.
        started = time.monotonic()
        assert tt.box_status(sock, BOX_STATUS, 5.0, hold=5.0, since="app")["app_done"] is True
        assert time.monotonic() - started < DELAY


def test_a_member_still_loading_is_not_taken_for_another_instance() -> None:
    """A replica in bootstrap answers with the nil uuid: that is not "another
    instance on our probe socket" (the wait used to fail at once, "identity",
    when a loaded host made it probe before STATUS=running); it is a member
    not running yet, reported as such when the wait times out. Tarantool 2.6
    shows the nil uuid only for a moment early in box.cfg (caught under
    load, too short to catch at will): the probe pins that moment, the same
    box_status.lua with the uuid nil while loading, on a real loading member."""
    uuid = "8e1c5b2a-0d4f-4c6e-9a1b-3f2e4d5c6b7a"
    dead = ["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()]
    with _tarantool(
        replication=dead,
        replication_timeout=0.1,
        replication_connect_timeout=TIMEOUT,
        instance_uuid=uuid,
        read_only=True,
    ) as (proc, sock):
        _status_when(sock, lambda s: s.get("status") == "loading")
        nil_while_loading = BOX_STATUS.replace(
            "\nreturn r", "\nif r.status == 'loading' then r.uuid = nil end\nreturn r"
        )
        assert nil_while_loading != BOX_STATUS, "box_status.lua no longer ends in 'return r'"
        pinned = tt.box_status(sock, nil_while_loading, 1.0)
        assert pinned.get("status") == "loading" and pinned.get("uuid") in UNKNOWN_UUIDS, pinned
        reply = tt.wait_instance(
            sock, proc.pid, 0.5, instance_uuid=uuid, read_only=True, status_lua=nil_while_loading
        )
        assert not reply["ok"] and reply["error"]["kind"] == "timeout", reply
        assert reply["error"]["layer"] == "running", reply
