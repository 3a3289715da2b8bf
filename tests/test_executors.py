"""Every executor type, on this machine and on a real lab host over SSH."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import time

import pytest
from conftest import (
    HELPER,
    PY,
    Place,
    context_pids,
    left_nothing,
    seen_then_gone,
    wait_until,
)
from helpers import oracle

import remoteexec as rx
from remoteexec import services, waits

#: Slack above a configured timeout for a call that ends at that timeout:
#: milliseconds when the machine is idle; other suites share this 2-core
#: machine. The broken behaviours these bounds catch (a hang, waiting for a
#: 30 s timeout) miss them by far more.
LOAD_MARGIN = 8.0
#: For a call that must fail at once rather than wait for its 30 s timeout:
#: well below that timeout, whatever the load.
FAIL_FAST = 10.0


def _gone(_place: Place, pid: int) -> bool:
    return oracle.identity(pid) is None


def _run(place: Place) -> tuple:
    """(run_id, context pids) of the place's master, for the oracle."""
    return place.host.master.run_id, context_pids(place.host.master)


def test_simple_executor(place: Place) -> None:
    ex = rx.SimpleExecutor(["sleep", "30"], on=place.host)
    assert not ex.running()
    ex.start()
    assert ex.running() and ex.pid
    pid = ex.pid
    ex.stop()
    assert not ex.running()
    assert wait_until(lambda: _gone(place, pid), 3)


def test_output_executor(place: Place) -> None:
    ex = rx.OutputExecutor(
        place.cmd("banner", "we are ready", 0.3), banner="are re+ady", on=place.host, timeout=10
    )
    with ex:
        assert ex.running()
        assert "we are ready" in ex.output_tail()
        assert "starting up" in ex.output_tail()
    assert not ex.running()


def test_tcp_executor(place: Place) -> None:
    port = place.free_port()
    ex = rx.TCPExecutor(
        place.cmd("http", "127.0.0.1", port), host="127.0.0.1", port=port, on=place.host, timeout=20
    )
    ex.start()
    try:
        # The port answers on the host the executor ran on.
        r = place.host.run(
            [PY, "-c", "import socket; socket.create_connection(('127.0.0.1', %d), 2)" % ex.port]
        )
        assert r.returncode == 0, r.stderr
        with ex.stopped():
            assert not ex.running()
            r = place.host.run(
                [
                    PY,
                    "-c",
                    "import socket; socket.create_connection(('127.0.0.1', %d), 2)" % ex.port,
                ]
            )
            assert r.returncode != 0
        assert ex.running()
    finally:
        ex.stop()


def test_unix_socket_executor(place: Place) -> None:
    path = os.path.join(place.scratch, "s.sock")
    with rx.UnixSocketExecutor(
        place.cmd("unix", path), socket_name=path, on=place.host, timeout=10
    ) as ex:
        assert ex.running()


def test_http_executor(place: Place) -> None:
    port = place.free_port()
    url = "http://127.0.0.1:%d/" % port
    with rx.HTTPExecutor(
        place.cmd("http", "127.0.0.1", port), url=url, on=place.host, timeout=20
    ) as ex:
        assert ex.running()
        assert "serving" in ex.output_tail()


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_port_zero_is_picked_on_the_host_at_start(place: Place, kind: str) -> None:
    """port 0: a port free on the host is picked at start(), before the command
    is resolved (OwnPort gives it to the server), and shown in endpoints."""
    command = [PY, HELPER, "http", "127.0.0.1", rx.OwnPort()]
    if kind == "tcp":
        ex: rx.TCPExecutor = rx.TCPExecutor(
            command, host="127.0.0.1", port=0, on=place.host, timeout=20
        )
    else:
        ex = rx.HTTPExecutor(command, url="http://127.0.0.1:0/", on=place.host, timeout=20)
    assert ex.endpoints["port"] is None
    with ex:
        port = ex.port
        assert port != 0 and ex.endpoints["port"] == str(port)
        assert str(port) in ex.command_parts
        if kind == "http":
            assert ex.endpoints["url"] == "http://127.0.0.1:%d/" % port
        ex.wait_for(waits.TCP("127.0.0.1", port))


def test_http_executor_status_mismatch_times_out(place: Place) -> None:
    port = place.free_port()
    url = "http://127.0.0.1:%d/no-such-page" % port
    timeout = 1.5
    ex = rx.HTTPExecutor(
        place.cmd("http", "127.0.0.1", port), url=url, status=200, on=place.host, timeout=timeout
    )
    started = time.monotonic()
    with pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    assert timeout <= time.monotonic() - started < timeout + LOAD_MARGIN
    assert "status 404" in str(info.value)
    assert info.value.host == place.host.name


def test_pid_executor(place: Place) -> None:
    path = os.path.join(place.scratch, "x.pid")
    with rx.PidExecutor(
        place.cmd("pidfile", path, 0.2), filename=path, on=place.host, timeout=10
    ) as ex:
        assert ex.running()
        with open(place.seen_from_master(path)) as f:
            assert int(f.read()) == ex.pid


def test_executor_with_composed_waits(place: Place) -> None:
    port = place.free_port()
    wait = waits.TCP("127.0.0.1", port) & waits.Banner("serving")
    with rx.Executor(
        place.cmd("http", "127.0.0.1", port), wait=wait, on=place.host, timeout=10
    ) as ex:
        assert ex.running()
        ex.wait_for(waits.HTTP("http://127.0.0.1:%d/" % port))


def test_command_not_found(place: Place) -> None:
    started = time.monotonic()
    with pytest.raises(rx.CommandNotFound) as info:
        rx.TCPExecutor(
            ["no-such-program-xyz", "--flag"], host="127.0.0.1", port=1, on=place.host, timeout=30
        ).start()
    assert time.monotonic() - started < FAIL_FAST, "at once, not after the 30 s timeout"
    assert "no-such-program-xyz" in str(info.value)
    assert info.value.host == place.host.name


def test_process_exits_early(place: Place) -> None:
    ex = rx.TCPExecutor(
        place.cmd("exit", 3, "bad config line 7"),
        host="127.0.0.1",
        port=place.free_port(),
        on=place.host,
        timeout=30,
    )
    started = time.monotonic()
    with pytest.raises(rx.ProcessExitedWithError) as info:
        ex.start()
    assert time.monotonic() - started < FAIL_FAST, "must fail fast, not wait for the 30 s timeout"
    err = info.value
    assert err.exit_code == 3
    assert "bad config line 7" in err.output_tail
    assert "exit code 3" in str(err) and place.host.name in str(err)


def test_port_already_in_use(place: Place) -> None:
    port = place.free_port()
    first = rx.TCPExecutor(
        place.cmd("http", "127.0.0.1", port), host="127.0.0.1", port=port, on=place.host, timeout=10
    )
    with first:
        second = rx.TCPExecutor(
            place.cmd("http", "127.0.0.1", port),
            host="127.0.0.1",
            port=port,
            on=place.host,
            timeout=10,
        )
        with pytest.raises(rx.AlreadyRunning) as info:
            second.start()
        assert info.value.details["owner_pid"] == first.pid
        assert str(first.pid) in str(info.value)
        assert not second.running()


def test_start_timeout(place: Place) -> None:
    port = place.free_port()
    timeout = 1.0
    ex = rx.TCPExecutor(
        ["sleep", "60"], host="127.0.0.1", port=port, on=place.host, timeout=timeout
    )
    started = time.monotonic()
    # Its sleep is seen while start() waits, and gone once start() raised.
    with seen_then_gone(*_run(place)), pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    assert timeout <= time.monotonic() - started < timeout + LOAD_MARGIN
    assert "tcp 127.0.0.1:%d" % ex.port in str(info.value)


def test_stop_needs_sigkill(place: Place) -> None:
    ex = place.tcp("stubborn", timeout=10, stop_timeout=0.5, strict_stop=True)
    ex.start()
    pid = ex.pid
    with pytest.raises(rx.TimeoutExpired) as info:
        ex.stop()
    assert info.value.details.get("escalated") is True
    assert "SIGKILL" in str(info.value) and "SIGTERM" in str(info.value)
    assert wait_until(lambda: _gone(place, pid), 3)
    assert not ex.running()


def test_paused_process_stops_at_once(place: Place) -> None:
    """A stopped (SIGSTOP) process is continued after the stop signal, as
    systemd does: it ends on SIGTERM, not after stop_timeout and a SIGKILL."""
    ex = rx.SimpleExecutor(["sleep", "60"], on=place.host, stop_timeout=15, strict_stop=True)
    ex.start()
    pid = ex.pid
    ex.process.send_signal(signal.SIGSTOP)
    assert wait_until(lambda: (oracle.stat(pid) or oracle.Stat(pid, "", 0, 0, 0)).state == "T", 5)
    t0 = time.monotonic()
    ex.stop()  # strict_stop: an escalation to SIGKILL would raise
    assert time.monotonic() - t0 < FAIL_FAST
    assert wait_until(lambda: _gone(place, pid), 3)


def test_unexpected_exit_code_after_stop(place: Place) -> None:
    code = (
        "import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7));"
        " print('armed', flush=True); time.sleep(60)"
    )
    ex = rx.OutputExecutor([PY, "-c", code], banner="armed", on=place.host, timeout=10)
    ex.start()
    with pytest.raises(rx.ProcessFinishedWithError) as info:
        ex.stop()
    assert info.value.exit_code == 7
    assert "exit code 7" in str(info.value)
    # The same with the code declared as expected is fine.
    ex2 = rx.OutputExecutor(
        [PY, "-c", code], banner="armed", on=place.host, timeout=10, expected_returncode=7
    )
    ex2.start()
    ex2.stop()


def test_chatty_process_does_not_block(place: Place) -> None:
    """1 MB of output before listening: no pipe may fill up."""
    ex = place.tcp("http", 1 << 20, timeout=15)
    with ex:
        assert ex.running()
        assert "serving" in ex.output_tail(lines=3)


def test_double_forking_daemon_killed_on_stop(place: Place) -> None:
    ex = place.tcp("daemon", timeout=10)
    ex.start()
    assert ex.running(tree=True), "main exited 0 but the daemon it left runs"
    with left_nothing(*_run(place), at_least=1) as daemons:
        assert all(why.startswith("marked ") for why in daemons.values()), daemons
        ex.stop()
    # Reaped too, not left as zombies of the context.
    assert wait_until(lambda: all(oracle.stat(p) is None for p in daemons), 2)


def test_kill_and_status_calls(place: Place) -> None:
    ex = rx.OutputExecutor(place.cmd("children", 3), banner="tree ready", on=place.host, timeout=10)
    ex.start()
    with left_nothing(*_run(place), at_least=4) as tree:
        assert len(tree) == 4, tree
        ex.kill()
    assert not ex.running()


#: How long the long Host.call holds the main thread at most: the status
#: calls must all return while it is still in flight, well before this.
LONG_CALL_LIMIT = 30.0


def test_status_not_blocked_by_long_call(place: Place) -> None:
    """running(), output(), Host.run() and stop() are served while a long
    Host.call holds the context's main thread: each returns while that call
    is still in flight (it ends only when the test releases it)."""
    import threading

    from helpers import long_call

    started = os.path.join(place.scratch, "long-call-started")
    release = os.path.join(place.scratch, "long-call-release")
    ex = rx.SimpleExecutor(["sleep", "30"], on=place.host).start()
    pid = ex.pid
    result: list = []
    t = threading.Thread(
        target=lambda: result.append(
            place.host.call(long_call.hold, started, release, LONG_CALL_LIMIT)
        ),
        daemon=True,
    )
    t.start()
    try:
        assert wait_until(lambda: os.path.exists(place.seen_from_master(started)), 30)

        def in_flight(what: str) -> None:
            assert t.is_alive() and not result, "%s returned only after the long call" % what

        assert ex.running()
        in_flight("running()")
        ex.output_tail()
        in_flight("output_tail()")
        assert place.host.run(["echo", "served"]).stdout == "served\n"
        in_flight("Host.run()")
        ex.stop()
        in_flight("stop()")
        assert oracle.identity(pid) is None, "stop() stopped it"
    finally:
        with open(place.seen_from_master(release), "w"):
            pass
        t.join(LONG_CALL_LIMIT + 10)
    assert result == ["released"], "the long call was in flight until released"


def test_default_is_local(tmp_path) -> None:
    """on=None: a lazily created local context, as a drop-in for mirakuru."""
    path = str(tmp_path / "d.pid")
    ex = rx.PidExecutor(
        [PY, "-c", "import os,time; open(%r,'w').write(str(os.getpid())); time.sleep(30)" % path],
        filename=path,
        timeout=10,
    )
    with ex:
        assert ex.running()
        assert ex.on.kind == "local"
    assert not ex.running()


def test_many_sequential_executors_no_growth(place: Place) -> None:
    import threading

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def one() -> None:
        rx.SimpleExecutor(["sleep", "30"], on=place.host).start().stop()

    for _ in range(5):
        one()
    threads, files = threading.active_count(), fds()
    for _ in range(100):
        one()
    assert threading.active_count() <= threads
    assert fds() <= files + 2
    # The oracle sees a live one of this run, then none of the run at all.
    last = rx.SimpleExecutor(["sleep", "30"], on=place.host).start()
    with left_nothing(*_run(place), at_least=1) as alive:
        assert list(alive) == [last.pid], alive
        last.stop()


def test_stop_signal_enum_and_path_arguments(place: Place) -> None:
    """signal.Signals and pathlib.Path are not plain types: sent as int/str."""
    scratch = pathlib.Path(place.scratch)
    pidfile = scratch / "p.pid"
    ex = rx.PidExecutor(
        place.cmd("pidfile", pidfile, 0), filename=pidfile, cwd=scratch, on=place.host, timeout=10
    )
    ex.start()
    ex.stop(stop_signal=signal.SIGINT)  # Python re-raises SIGINT: the expected -2
    assert not ex.running()
    with pytest.raises(TypeError, match="only None, bool"):
        place.host.service("status", proc_id=object())


def test_failed_stop_keeps_the_process(place: Place) -> None:
    ex = rx.SimpleExecutor(["sleep", "30"], on=place.host).start()
    with pytest.raises(TypeError):
        ex.stop(stop_signal="TERM")  # not a signal: nothing was sent
    assert ex.running() and ex.pid
    ex.stop()
    assert not ex.running()


def test_concurrent_opens_share_one_context(master: rx.Master) -> None:
    import threading

    hosts = []
    threads = [
        threading.Thread(target=lambda: hosts.append(master.local(name="shared"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(hosts) == 4 and all(h is hosts[0] for h in hosts)
    assert master.hosts.count(hosts[0]) == 1


def test_contexts_on_one_machine_are_isolated(master: rx.Master) -> None:
    """Two contexts of one run on one machine (as lab hosts are) never touch
    each other's processes or directories."""
    one, two = master.local(name="one"), master.local(name="two")
    assert one.info["run_dir"] != two.info["run_dir"]
    a = rx.SimpleExecutor(["sleep", "30"], on=one).start()
    b = rx.SimpleExecutor(["sleep", "30"], on=two).start()
    assert a._proc["id"] == b._proc["id"], "same per-context id: only the prefix tells them apart"
    a.stop()
    assert b.running()
    one.close()
    assert b.running() and os.path.isdir(two.info["run_dir"])
    b.stop()


def test_slow_reply_is_a_timeout_not_a_lost_host(master: rx.Master) -> None:
    host = master.local()
    with pytest.raises(rx.TimeoutExpired) as info:
        host.service("run", reply_timeout=0.3, command=["sleep", "1"])
    assert "no reply to run within 0.3s" in str(info.value)
    assert host.lost is None
    assert host.run(["sleep", "0.5"]).ok  # no timeout: waits as long as it takes


@pytest.mark.parametrize("keep_logs", [False, True])
def test_close_removes_the_run_dir_unless_keep_logs(keep_logs: bool) -> None:
    m = rx.Master(keep_logs=keep_logs)
    try:
        host = m.local()
        ex = rx.SimpleExecutor(["sleep", "30"], on=host).start()
        run_dir = host.info["run_dir"]
        assert os.path.isdir(run_dir)
        with left_nothing(m.run_id, context_pids(m), at_least=1, contexts_exit=True) as alive:
            assert ex.pid in alive
            m.close()
    finally:
        m.close()
    assert os.path.isdir(run_dir) is keep_logs
    if keep_logs:
        import shutil

        shutil.rmtree(run_dir)


# -- https -------------------------------------------------------------------

#: An https server: ADDR PORT CERT KEY; bounded lifetime like tests/helpers/proc.py.
HTTPS_SERVER = """
import http.server, ssl, sys, threading
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Quiet)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[3], sys.argv[4])
server.socket = tls.wrap_socket(server.socket, server_side=True)
threading.Timer(600, server.shutdown).start()
print("serving https", flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A self-signed certificate for 127.0.0.1, on the master (see _on_host)."""
    import subprocess

    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key]
    args += ["-out", cert, "-subj", "/CN=remoteexec-test"]
    args += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        ["openssl", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _on_host(place: Place, cert: tuple) -> tuple:
    """The certificate and key copied to the host (its /tmp is its own)."""
    return tuple(place.put(os.path.basename(p), open(p, "rb").read()) for p in cert)


def _https(place: Place, cert: tuple, **kwargs: object) -> rx.HTTPExecutor:
    port = place.free_port()
    command = [PY, "-c", HTTPS_SERVER, "127.0.0.1", port, *cert]
    return rx.HTTPExecutor(command, url="https://127.0.0.1:%d/" % port, on=place.host, **kwargs)


def test_https_executor(place: Place, tls_cert: tuple) -> None:
    """TLS is done on the host: an https URL used to be spoken to in plain
    HTTP (reset by peer) until the timeout."""
    tls_cert = _on_host(place, tls_cert)
    with _https(place, tls_cert, verify=False, timeout=20) as ex:
        assert ex.running() and "serving https" in ex.output_tail()
    with _https(place, tls_cert, ca_file=tls_cert[0], timeout=20) as ex:
        assert ex.running()
        ex.wait_for(waits.HTTP(ex.url.geturl(), ca_file=tls_cert[0]))
    # Verified by default: a self-signed certificate fails, and says so.
    # (5 s: the server must come up well within it, even on a loaded machine.)
    timeout = 5.0
    ex = _https(place, tls_cert, timeout=timeout)
    started = time.monotonic()
    with seen_then_gone(*_run(place)), pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    assert timeout <= time.monotonic() - started < timeout + LOAD_MARGIN
    text = str(info.value)
    assert re.search("TLS certificate verification failed: self.signed certificate", text), text
    assert "ca_file=" in text and "verify=False" in text


def test_https_url_without_port_probes_443(place: Place) -> None:
    ex = rx.HTTPExecutor(["sleep", "30"], url="https://127.0.0.1/", on=place.host, timeout=1)
    assert ex.port == 443
    with pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    assert "https://127.0.0.1/" in str(info.value)
    assert "Connection refused" in str(info.value), "443 is probed, not 80"


# -- environments -------------------------------------------------------------


def test_envvars_reach_the_process_as_given(place: Place, tmp_path) -> None:
    code = "import os; print('P=%s Q=%s' % (os.environ['P'], os.environ['Q']), flush=True)"
    ex = rx.OutputExecutor(
        [PY, "-c", code + "; import time; time.sleep(30)"],
        banner="P=",
        envvars={"P": tmp_path, "Q": "plain"},
        on=place.host,
        timeout=10,
    )
    with ex:
        assert "P=%s Q=plain" % tmp_path in ex.output_tail()
    with pytest.raises(TypeError, match=r"envvars\['Q'\] must be a str .* got bytes"):
        rx.SimpleExecutor(["true"], envvars={"Q": b"xyz"}, on=place.host)


# -- old processes and their logs ---------------------------------------------


def test_restart_forgets_the_previous_log(place: Place) -> None:
    ex = place.tcp("http")
    ex.start()
    first_log = ex.log_path
    assert first_log and os.path.exists(place.seen_from_master(first_log))
    ex.stop()
    assert os.path.exists(place.seen_from_master(first_log)), "output() still reads it after stop()"
    ex.start()
    try:
        first_log_here = place.seen_from_master(first_log)
        assert wait_until(lambda: not os.path.exists(first_log_here), 5), first_log
        assert ex.log_path != first_log and os.path.exists(place.seen_from_master(ex.log_path))
        assert "serving" in ex.output_tail()
    finally:
        ex.stop()


def _drop_warns(holder: list) -> None:
    """Drop the only reference to an executor, as a script forgetting it does."""
    import gc

    def drop() -> None:
        holder.clear()
        gc.collect()

    with pytest.warns(ResourceWarning, match="dropped while its process"):
        drop()


def test_dropped_executor_warns(place: Place) -> None:
    _drop_warns([rx.SimpleExecutor(["sleep", "30"], on=place.host).start()])
    assert place.host.run(["true"]).ok


def test_dropped_executor_is_killed_and_its_log_removed(place: Place) -> None:
    holder = [rx.SimpleExecutor(["sleep", "30"], on=place.host).start()]
    pid, log = holder[0].pid, holder[0].log_path
    _drop_warns(holder)
    assert wait_until(lambda: _gone(place, pid), 5), "a dropped executor's process dies"
    assert wait_until(lambda: not os.path.exists(place.seen_from_master(log)), 5)
    # A stopped one that is dropped takes its log along, without a warning.
    ex = rx.SimpleExecutor(["sleep", "30"], on=place.host).start()
    log = ex.log_path
    ex.stop()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del ex
    assert wait_until(lambda: not os.path.exists(place.seen_from_master(log)), 5)


def test_drop_on_the_broker_thread_or_a_closed_host_never_blocks_or_raises(
    master: rx.Master,
) -> None:
    """__del__ may run on mitogen's broker thread (where a blocking call
    would deadlock), or after the host is gone."""
    import gc
    import sys
    import threading
    import warnings

    raised: list = []
    previous, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        host = master.local(name="drop")
        holder = [rx.SimpleExecutor(["sleep", "30"], on=host).start()]
        pid = holder[0].pid
        dropped = threading.Event()
        ran_on: list = []

        def drop() -> None:
            ran_on.append(threading.current_thread().name)
            holder.clear()  # the last reference: __del__ runs here, on the broker
            dropped.set()

        def drop_on_broker() -> bool:
            master.broker.defer(drop)
            return dropped.wait(5)

        with pytest.warns(ResourceWarning):
            deferred = drop_on_broker()
        assert deferred
        assert ran_on == ["mitogen.broker"]
        assert host.run(["true"]).ok, "the broker still serves calls"
        assert wait_until(lambda: oracle.identity(pid) is None, 5)
        # After the host is closed: nothing to send or warn about (closing
        # killed the process), nothing raised.
        ex = rx.SimpleExecutor(["sleep", "30"], on=host).start()
        host.close()
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            del ex
            gc.collect()
        # A blocking send to a closed host would wait REPLY_SLACK or forever.
        assert time.monotonic() - started < FAIL_FAST
    finally:
        sys.unraisablehook = previous
    assert raised == []


# -- the restart policy (on the host) and the Service interface ---------------

#: Fails (exit 3) until its counter file reaches 3 runs, then keeps running.
FLAKY = (
    'n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1"; echo run $n;'
    ' [ "$n" -ge 3 ] && exec sleep 60; exit 3'
)


def test_restart_on_failure_restarts_until_it_keeps_running(place: Place) -> None:
    counter = os.path.join(place.scratch, "flaky-count")
    ex = rx.SimpleExecutor(
        ["sh", "-c", FLAKY, "sh", counter],
        on=place.host,
        restart="on-failure",
        max_restarts=5,
        restart_backoff=0.05,
    )
    ex.start()
    try:
        assert wait_until(lambda: ex.status()["restarts"] == 2, 15), ex.status()
        assert wait_until(lambda: ex.status()["state"] == "running", 5), ex.status()
        status = ex.status()
        assert status["last_exit"] == 3 or status["last_exit"] is None
        assert ex.running() and status["pids"] == [ex.pid]
        assert wait_until(lambda: "run 3" in ex.output_tail(), 5), ex.output_tail()
        # Two failures, then it keeps running: no third restart comes.
        time.sleep(0.3)  # a bound for what must NOT happen
        assert ex.status()["restarts"] == 2
    finally:
        ex.stop()
    assert ex.status()["state"] == "stopped"


def test_restart_gives_up_after_max_restarts_and_reports_the_exit(place: Place) -> None:
    ex = rx.SimpleExecutor(
        ["sh", "-c", "echo failing; exit 7"],
        on=place.host,
        restart="on-failure",
        max_restarts=2,
        restart_backoff=0.05,
    )
    ex.start()
    assert wait_until(lambda: ex.status()["state"] == "exited", 15), ex.status()
    status = ex.status()
    assert status["restarts"] == 2
    assert status["exit_code"] == 7 and status["last_exit"] == 7
    assert status["pids"] == []
    assert ex.output_tail().count("failing") == 3
    with pytest.raises(rx.ProcessFinishedWithError):
        ex.stop()


def test_no_restart_by_default_and_none_after_stop(place: Place) -> None:
    ex = rx.SimpleExecutor(["sh", "-c", "exit 5"], on=place.host)
    ex.start()
    assert wait_until(lambda: ex.status()["state"] == "exited", 10), ex.status()
    assert ex.status()["restarts"] == 0 and ex.status()["exit_code"] == 5
    stopped = rx.SimpleExecutor(
        ["sleep", "60"], on=place.host, restart="on-failure", max_restarts=3, restart_backoff=0.05
    )
    stopped.start()
    pid = stopped.pid
    stopped.stop()  # killed by our stop signal: not a failure to restart
    assert wait_until(lambda: _gone(place, pid), 5)
    time.sleep(0.3)  # a bound for what must NOT happen: no restart after our stop
    assert place.leftovers() == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"restart": "always"}, ValueError),
        ({"max_restarts": -1}, ValueError),
        ({"max_restarts": 1.5}, TypeError),
        ({"restart_backoff": float("nan")}, ValueError),
        ({"restart_backoff": -1}, ValueError),
    ],
)
def test_restart_arguments_are_checked_before_start(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        rx.SimpleExecutor(["true"], **kwargs)


def test_status_endpoints_and_artifacts_of_a_tcp_executor(place: Place, tmp_path) -> None:
    ex = place.tcp("http")
    assert ex.status()["state"] == "stopped"
    assert set(ex.endpoints) == {"uri", "host", "port"}
    ex.start()
    try:
        status = ex.status()
        assert status["state"] == "ready" and status["readiness"] == "ready"
        assert status["pids"] == [ex.pid] and status["hosts"] == [place.host.name]
        assert status["endpoints"]["uri"] == "127.0.0.1:%d" % ex.port
        assert time.time() - 60 < status["since"] <= time.time() + 5
        assert ex.log_tail(5) == ex.output_tail(5)
    finally:
        ex.stop()
    written = ex.artifacts(str(tmp_path / "artifacts"))
    assert written and all(os.stat(p).st_mode & 0o777 == 0o600 for p in written)
    assert ex.status()["state"] == "stopped"


class _Later:
    """A Deferred whose value is set after the executor was made."""

    def __init__(self) -> None:
        self.value: object = None

    def resolve(self) -> object:
        if self.value is None:
            raise ValueError("not known yet")
        return self.value


def test_deferred_url_env_and_arguments_are_resolved_and_checked_at_start(place: Place) -> None:
    port, url, greeting = _Later(), _Later(), _Later()
    ex = rx.HTTPExecutor(
        [*place.cmd("http", "127.0.0.1"), port],
        url=url,
        on=place.host,
        timeout=10,
        envvars={"GREETING": greeting},
    )
    assert isinstance(ex, services.Service)
    assert ex.endpoints == {"uri": None, "host": None, "port": None, "url": None}
    assert url in ex.inputs()
    with pytest.raises(ValueError, match="not known yet"):
        ex.start()  # nothing started: the references are not known yet
    assert place.leftovers() == []
    chosen = place.free_port()
    port.value, url.value, greeting.value = str(chosen), "http://127.0.0.1:%d/" % chosen, "hi"
    with ex:
        assert ex.port == chosen
        assert ex.endpoints["url"] == "http://127.0.0.1:%d/" % chosen
        assert ex.status()["state"] == "ready"
    greeting.value = object()  # resolved at the next start, and refused there
    with pytest.raises(TypeError, match="GREETING"):
        ex.start()


def test_a_restarted_output_executor_is_ready_only_on_a_new_banner(place: Place) -> None:
    counter = os.path.join(place.scratch, "banner-count")
    script = (
        'n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1";'
        ' if [ "$n" -eq 1 ]; then echo ready; sleep 0.3; exit 3; fi; exec sleep 60'
    )
    ex = rx.OutputExecutor(
        ["sh", "-c", script, "sh", counter],
        banner="ready",
        on=place.host,
        timeout=10,
        restart="on-failure",
        max_restarts=1,
        restart_backoff=0.05,
    )
    ex.start()
    try:
        assert ex.status()["state"] == "ready"
        assert wait_until(lambda: ex.status()["restarts"] == 1, 10), ex.status()
        assert wait_until(lambda: ex.status()["state"] == "running", 5), ex.status()
        time.sleep(0.3)  # a bound for what must NOT happen: the old banner is not new
        assert ex.status()["state"] == "running" and ex.status()["readiness"] == "process"
    finally:
        ex.stop()
