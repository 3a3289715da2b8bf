"""64 lab hosts from one master, end to end: the plain-SSH fast path, then a
context on each host that runs a command and starts and stops one service,
then teardown; the master's descriptors and threads stay bounded under the
default ``ulimit -n`` and come back afterwards.

One test, one 64-host lab (~1 s to build); about 40-60 s on 2 loaded cores,
most of it the 64 context bootstraps."""

from __future__ import annotations

import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List

import mitogen.core
import pytest
from conftest import connect_options, need_lab, wait_until

import remoteexec as rx
from remoteexec.fanout import DEFAULT_WORKERS, PlainHost, run_plain
from remoteexec.host import RunResult

HOSTS = 64
#: The usual default soft limit; the test must hold under it whatever this shell has.
ULIMIT_N = 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    """This process's threads as the kernel counts them (mitogen's too)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


@pytest.fixture(scope="module")
def big_lab() -> Iterator[Any]:
    need_lab()
    from remoteexec.lab import Lab

    with Lab(hosts=HOSTS) as the_lab:
        yield the_lab


@pytest.fixture
def default_ulimit() -> Iterator[None]:
    """The soft RLIMIT_NOFILE at the common default (1024) for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(ULIMIT_N, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.lab
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("default_ulimit")
def test_64_hosts_end_to_end_with_bounded_fds_and_threads(big_lab: Any) -> None:
    fds0, threads0 = open_fds(), os_threads()
    peak = {"fds": fds0, "threads": threads0}
    stop = threading.Event()

    def sample() -> None:  # the peaks while the work runs, every 50 ms, bounded
        for _ in range(20 * 600):
            peak["fds"] = max(peak["fds"], open_fds())
            peak["threads"] = max(peak["threads"], os_threads())
            if stop.wait(0.05):
                return

    sampler = threading.Thread(target=sample, name="test-sampler", daemon=True)
    sampler.start()
    timings = {}
    try:
        # The fast path: no context, one SSH session per host.
        t0 = time.monotonic()
        plain = [
            PlainHost(
                h.name,
                h.target,
                identity_file=big_lab.identity_file,
                known_hosts_file=big_lab.known_hosts_file,
            )
            for h in big_lab.hosts
        ]
        results = run_plain(plain, ["hostname"])
        timings["fast path"] = time.monotonic() - t0
        for h in big_lab.hosts:
            result = results[h.name]
            assert isinstance(result, RunResult), result
            assert result.stdout == h.hostname + "\n"
        # Worker, transport and handshake timer per host served, plus the sampler.
        assert peak["threads"] <= threads0 + 3 * DEFAULT_WORKERS + 1, peak

        # Contexts: connect, run, one service each, tear down.
        with rx.Master(heartbeat_timeout=30) as master:
            t0 = time.monotonic()
            hosts: List[rx.Host] = master.connect_all(
                big_lab.targets, **dict(connect_options(big_lab), connect_timeout=30)
            )
            timings["connect_all"] = time.monotonic() - t0
            with ThreadPoolExecutor(16) as pool:
                t0 = time.monotonic()
                names = list(pool.map(lambda h: h.run(["hostname"], check=True).stdout, hosts))
                assert names == [h.hostname + "\n" for h in big_lab.hosts]
                timings["run"] = time.monotonic() - t0

                def service(host: rx.Host) -> bool:
                    executor = rx.SimpleExecutor(["sleep", "600"], on=host, timeout=60)
                    executor.start()
                    running = executor.running()
                    executor.stop()
                    return running and not executor.running()

                t0 = time.monotonic()
                assert all(pool.map(service, hosts))
                timings["service start+stop"] = time.monotonic() - t0
            during = dict(peak)
            t0 = time.monotonic()
        timings["teardown"] = time.monotonic() - t0
    finally:
        stop.set()
        sampler.join(5)
    print("64 hosts:", ", ".join("%s %.1f s" % kv for kv in timings.items()), peak)
    # Bounded while it ran: well under the default limit.
    assert during["fds"] < ULIMIT_N // 2, during
    assert during["threads"] < 400, during
    # And given back: the master's descriptors and threads as before (a few
    # may linger for a moment while the last threads exit), but for mitogen's
    # pool of idle Latch socketpairs (2 fds each, one per thread that ever
    # waited at the same time, reused by later masters: bounded by our pools).
    idle_pairs = len(mitogen.core.Latch._cls_idle_socketpairs)
    assert idle_pairs <= 64, idle_pairs
    assert wait_until(lambda: open_fds() <= fds0 + 2 * idle_pairs + 4, 10), (
        open_fds(),
        fds0,
        idle_pairs,
    )
    assert wait_until(lambda: os_threads() <= threads0 + 2, 10), (os_threads(), threads0)


@pytest.mark.lab
def test_a_trivial_shell_init_covers_the_start_up_files_without_touching_them() -> None:
    """``Lab(shell_init="trivial")`` on the machine's own home (``shared_fs``):
    a session's shell sees an empty ~/.bashrc while the real one is unchanged,
    and a session of a ``"host"`` lab sees the real one."""
    need_lab()
    from remoteexec.lab import Lab

    with pytest.raises(ValueError, match="shell_init must be one of"):
        Lab(hosts=1, shell_init="none")
    bashrc = os.path.join(os.path.expanduser("~root"), ".bashrc")
    if not os.path.isfile(bashrc) or not os.path.getsize(bashrc):
        pytest.skip("root has no ~/.bashrc to cover")
    with open(bashrc, "rb") as f:
        before = f.read()
    seen = {}
    for init in ("trivial", "host"):
        with Lab(hosts=1, shared_fs=True, shell_init=init) as small:
            plain = PlainHost("h1", small.targets[0], small.identity_file, small.known_hosts_file)
            result = run_plain([plain], ["sh", "-c", 'wc -c < "$HOME/.bashrc"'])["h1"]
            assert isinstance(result, RunResult) and result.returncode == 0, result
            seen[init] = int(result.stdout.split()[-1])
    assert seen == {"trivial": 0, "host": len(before)}, seen
    with open(bashrc, "rb") as f:
        assert f.read() == before
