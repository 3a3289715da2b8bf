"""Per-command latency on a lab host: remoteexec Host.run / Host.call against Fabric 3.

Host.call and Host.run go through the host's lane (a second session of the
ssh connection, see remoteexec/lane.py), opened before timing; the same calls
through mitogen's path (the lane disabled) are extra rows, so the breakdown
of mitogen's path stays measured. The lane's floor (a line echoed by ``cat``
through a session of the same connection) is timed interleaved with them,
and the limits are computed from this run's own floors: the lane's, both
ends' Python, the spawn floor and the guard's tell on the host.

One lab host (a network namespace with its own sshd). remoteexec keeps one
mitogen context open; Fabric keeps one paramiko connection open (steady
state for both, connection set-up is not timed). Both use the lab's key and
strict host key checking (remoteexec: the lab's known_hosts via ssh;
Fabric: paramiko ``load_host_keys(known_hosts)`` + ``RejectPolicy``).

The three series are measured interleaved, in blocks, so a drift in machine
load hits all of them alike. Fabric costs ~50-100 ms a command, so it gets
fewer iterations (said in the output).

Run: ``python bench/bench_commands.py`` (needs root for the lab).
"""

from __future__ import annotations

import os
import statistics
import time

import _common as c

RUN_N = 1000
CALL_N = 1000
FABRIC_N = 100
BLOCKS = 10
WARMUP = 20
SHELL_N = 30

RUN_TARGET_MS = 1.0
CALL_TARGET_MS = 0.2
FABRIC_FACTOR = 15.0
ECHO_N = 300


def _fabric_connection(lab, address: str, port: int, known_hosts: bool = True):
    """A Fabric Connection to a lab host: the lab's key, strict host key checking."""
    import paramiko
    from fabric import Config, Connection

    conn = Connection(
        address,
        user=lab.user,
        port=port,
        config=Config(overrides={"load_ssh_configs": False}),
        connect_timeout=10,
        connect_kwargs={
            "key_filename": lab.identity_file,
            "look_for_keys": False,
            "allow_agent": False,
        },
    )
    if known_hosts:
        conn.client.load_host_keys(lab.known_hosts_file)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def _check_fabric_strict(lab, address: str, port: int) -> None:
    """Prove the Fabric baseline checks host keys: an empty known_hosts is refused."""
    import paramiko

    conn = _fabric_connection(lab, address, port, known_hosts=False)
    try:
        conn.open()
    except paramiko.SSHException:
        return
    finally:
        conn.close()
    raise AssertionError("Fabric connected without a known host key: RejectPolicy not in force")


def _ssh_echo(lab, address: str, port: int) -> c.Stats:
    """The floor: one line echoed by ``cat`` through an open ssh session
    (the lab's key, strict host key checking), as mitogen's stream uses it."""
    import subprocess

    argv = ["ssh", "-T", "-i", lab.identity_file, "-o", "BatchMode=yes"]
    argv += ["-o", "UserKnownHostsFile=%s" % lab.known_hosts_file, "-p", str(port)]
    argv += ["%s@%s" % (lab.user, address), "cat"]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        assert child.stdin is not None and child.stdout is not None
        stdin, stdout = child.stdin, child.stdout

        def echo() -> None:
            stdin.write(b"x\n")
            if stdout.readline() != b"x\n":
                raise AssertionError("ssh cat did not echo")

        return c.Stats.of(c.time_calls(echo, ECHO_N, warmup=WARMUP))
    finally:
        child.kill()
        child.wait()


def _lane_echo(host):
    """The lane's own floor: a session on the host's ControlMaster connection
    (as the lane's) running ``cat``; returns (echo one line and sleep in
    read, echo one line and wait awake as a ``Host.call`` does, close)."""
    import select
    import subprocess

    from remoteexec.lane import SPIN_FOR

    argv = host.connector.mux_argv("cat")
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    wfd, rfd = child.stdin.fileno(), child.stdout.fileno()
    poll = select.poll()
    poll.register(rfd, select.POLLIN)

    def echo() -> None:
        os.write(wfd, b"x\n")
        if os.read(rfd, 64) != b"x\n":
            raise AssertionError("cat on the lane's connection did not echo")

    def echo_awake() -> None:
        os.write(wfd, b"x\n")
        end = time.perf_counter() + SPIN_FOR
        while not poll.poll(0) and time.perf_counter() < end:
            os.sched_yield()
        if os.read(rfd, 64) != b"x\n":
            raise AssertionError("cat on the lane's connection did not echo")

    def close() -> None:
        child.kill()
        child.wait()

    return echo, echo_awake, close


def _master_lane_costs(n: int) -> float:
    """Median seconds of the master's own work for one lane call, no I/O:
    pickle the request, read the reply's pickle (remoteexec.target.lane)."""
    from remoteexec.target import lane

    request = ("call", "_common", "trivial", (1,), {})
    reply = lane.frame({"ok": True, "result": 1})[lane.HEADER.size :]

    def work() -> None:
        lane.frame(request)
        lane.unpickle(reply)

    return c.Stats.of(c.time_calls(work, n, warmup=100)).median


def _thread_cpu(tid: int) -> float:
    """CPU seconds of one thread of this process."""
    import os

    with open("/proc/self/task/%d/stat" % tid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _master_cpu(fn, n: int) -> tuple:
    """(caller thread, broker thread) CPU per call of ``fn``, in seconds."""
    import threading
    import time

    broker = next(t for t in threading.enumerate() if t.name == "mitogen.broker")
    fn()
    b0, t0 = _thread_cpu(broker.native_id), time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n, (_thread_cpu(broker.native_id) - b0) / n


def _master_loop(host):
    """A round trip that never leaves the master: caller → master broker (a
    handler on the master's own router) → caller. What the master's two
    hand-offs cost, with no ssh and no host."""
    import mitogen
    import mitogen.core

    router = host.context.router

    def answer(msg) -> None:
        msg.reply(None, router=router)

    handle = router.add_handler(answer)
    me = mitogen.core.Context(router, mitogen.context_id)
    return lambda: me.send_async(mitogen.core.Message.pickled(None, handle=handle)).get()


def _halves(fn, n: int) -> tuple:
    """(there, back) medians in seconds of a call that returns the host's
    time.monotonic(): lab hosts share this kernel's clock, so send → start
    on the host and end on the host → the caller awake split exactly."""
    import time

    there, back = [], []
    for _ in range(n):
        t0 = time.monotonic()
        at = fn()
        t1 = time.monotonic()
        there.append(at - t0)
        back.append(t1 - at)
    return c.Stats.of(there).median, c.Stats.of(back).median


def _mitogen_path(host, fn):
    """``fn()`` with the host's lane disabled: mitogen's path, as before the lane."""

    def call():
        host.lane.enabled = False
        try:
            return fn()
        finally:
            host.lane.enabled = True

    return call


class _LaneOff:
    """``host`` whose ``run`` takes mitogen's path (for :func:`_run_split`)."""

    def __init__(self, host) -> None:
        self.run = lambda argv: _mitogen_path(host, lambda: host.run(argv))()


def _run_split(host, n: int) -> tuple:
    """(Stats of Host.run(["true"])'s time on the host, median seconds of the
    rest: the round trip), each pair from the same call, so a change in load
    between two loops cannot make the difference negative."""
    import time

    on_host, rest = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        took = host.run(["true"]).duration
        on_host.append(took)
        rest.append(time.perf_counter() - t0 - took)
    return c.Stats.of(on_host), c.Stats.of(rest).median


def _shell_init(host) -> float:
    """Seconds the remote login shell spends on start-up files under sshd.

    Fabric's command runs as ``$SHELL -c CMD`` started by sshd, and bash reads
    ~/.bashrc when it sees SSH_CLIENT. Time that shell on the host with and
    without SSH_CLIENT (remote-side durations, clean environment); the
    difference is what this machine's start-up files add to every Fabric
    command. Host.run never starts a shell.
    """
    facts = host.run(["sh", "-c", 'echo "$HOME"; echo "${SHELL:-/bin/sh}"'], check=True)
    home, shell = facts.stdout.split("\n")[:2]
    base = ["env", "-i", "HOME=%s" % home]
    as_sshd = [*base, "SSH_CLIENT=10.0.0.1 50000 22"]

    def remote_median(argv):
        durations = [host.run([*argv, shell, "-c", "true"]).duration for _ in range(SHELL_N)]
        return c.Stats.of(durations).median

    return max(0.0, remote_median(as_sshd) - remote_median(base))


def run() -> c.Report:
    report = c.lab_report(
        "Commands: Host.run / Host.call vs Fabric 3 (one lab host)", ["fabric", "paramiko"]
    )
    if report.skipped:
        return report
    import fabric
    import paramiko

    with c.lab_host() as (lab, host):
        h = lab.hosts[0]
        _check_fabric_strict(lab, h.address, h.port)
        conn = _fabric_connection(lab, h.address, h.port)
        try:
            conn.open()
            c.progress("fabric connected; warming up")
            import _target_probe

            t0, cpu0 = time.perf_counter(), time.process_time()
            if not host.open_lane():
                raise AssertionError("the lane did not open")
            lane_open = (time.perf_counter() - t0, time.process_time() - cpu0)
            lane_echo, lane_echo_awake, close_echo = _lane_echo(host)
            ops = {
                "run": lambda: host.run(["true"]),
                "call": lambda: host.call(c.trivial, 1),
                "run_mitogen": _mitogen_path(host, lambda: host.run(["true"])),
                "call_mitogen": _mitogen_path(host, lambda: host.call(c.trivial, 1)),
                "quick": _mitogen_path(host, lambda: host.call(_target_probe.quick_stamp)),
                "raw": lambda: host.context.call(c.trivial, 1),
                "ping": lambda: host.service("ping"),
                "pool": lambda: host.invoke("remoteexec.target.supervisor.ping"),
                "loop": _master_loop(host),
                "lane_floor": lane_echo,
                "lane_floor_awake": lane_echo_awake,
                # in_stream=False: no stdin forwarding, as Host.run gives /dev/null.
                "fabric": lambda: conn.run("true", hide=True, in_stream=False),
            }
            counts = {
                "run": RUN_N,
                "call": CALL_N,
                "run_mitogen": RUN_N // 2,
                "call_mitogen": CALL_N // 2,
                "quick": CALL_N,
                "raw": CALL_N // 2,
                "ping": RUN_N // 2,
                "pool": RUN_N // 2,
                "loop": CALL_N // 2,
                "lane_floor": CALL_N,
                "lane_floor_awake": CALL_N,
                "fabric": FABRIC_N,
            }
            samples = {name: [] for name in ops}
            for name, fn in ops.items():
                c.time_calls(fn, 0, warmup=WARMUP if name != "fabric" else 5)
            for block in range(BLOCKS):
                for name, fn in ops.items():
                    samples[name] += c.time_calls(fn, counts[name] // BLOCKS)
                c.progress("block %d/%d done" % (block + 1, BLOCKS))
            remote_run, run_trip = _run_split(host, 200)
            remote_run_mitogen, run_trip_mitogen = _run_split(_LaneOff(host), 200)
            shell_init = _shell_init(host)
            # The host idles between two lane requests for about a call's round trip.
            call_trip = statistics.median(samples["call"])
            spawn = host.call(_target_probe.spawn_parts, 200, call_trip)
            host_costs = host.call(_target_probe.lane_costs, 2000)
            master_costs = _master_lane_costs(2000)
            halves = {
                "lane": _halves(lambda: host.call(_target_probe.stamp), 300),
                "raw": _halves(lambda: host.context.call(_target_probe.stamp), 300),
                "quick": _halves(
                    _mitogen_path(host, lambda: host.call(_target_probe.quick_stamp)), 300
                ),
            }
            echo = _ssh_echo(lab, h.address, h.port)
            cpu = {
                "call": _master_cpu(ops["call"], 300),
                "run": _master_cpu(ops["run"], 300),
                "call_mitogen": _master_cpu(ops["call_mitogen"], 300),
                "run_mitogen": _master_cpu(ops["run_mitogen"], 300),
            }
            lane_stats = dict(host.lane.stats)
        finally:
            conn.close()
            close_echo()

    st = {name: c.Stats.of(s) for name, s in samples.items()}
    if lane_stats["fallbacks"] or lane_stats["failures"]:
        raise AssertionError("calls left the lane: %r" % lane_stats)
    rows = [
        ('remoteexec `Host.run(["true"])` (the lane)', st["run"]),
        ("remoteexec `Host.call(trivial, 1)` (the lane)", st["call"]),
        ('remoteexec `Host.run(["true"])` through mitogen (lane disabled)', st["run_mitogen"]),
        ("remoteexec `Host.call(trivial, 1)` through mitogen (lane disabled)", st["call_mitogen"]),
        ("remoteexec `Host.call` of a `@rx.quick` function", st["quick"]),
        ("raw mitogen `context.call(trivial, 1)`", st["raw"]),
        ('Fabric %s `Connection.run("true", hide=True)`' % fabric.__version__, st["fabric"]),
    ]
    report.text(
        "Per operation, in ms, on one lab host over ssh (steady state: connection open). "
        "Fabric is slow (%s ms a command), so it ran only %d iterations; remoteexec ran "
        "%d run + %d call; all measured interleaved in %d blocks. Fabric %s / paramiko %s, "
        "with the lab's key and strict host key checking (RejectPolicy + the lab's "
        "known_hosts; verified: an unknown host key is refused)."
        % (
            c.ms(st["fabric"].median),
            FABRIC_N,
            RUN_N,
            CALL_N,
            BLOCKS,
            fabric.__version__,
            paramiko.__version__,
        )
    )
    report.table(
        ["operation", "n", "median", "p90", "mean"],
        [(name, s.n, c.ms(s.median), c.ms(s.p90), c.ms(s.mean)) for name, s in rows],
    )
    fab = st["fabric"]
    report.table(
        ["ratio", "median", "mean"],
        [
            (
                "Fabric / Host.run",
                c.ratio(fab.median, st["run"].median),
                c.ratio(fab.mean, st["run"].mean),
            ),
            (
                "Fabric / Host.call",
                c.ratio(fab.median, st["call"].median),
                c.ratio(fab.mean, st["call"].mean),
            ),
        ],
    )
    adjusted = fab.median - shell_init
    lane_python = master_costs + host_costs["call"] / 1e3  # seconds
    report.text(
        "Per-call breakdown (medians, ms; master CPU per call from the calling thread's and "
        "mitogen's broker thread's CPU clocks; the halves from the host's `time.monotonic()`, "
        "the same kernel clock as the master's on lab hosts; load average %.1f at the end):"
        % os.getloadavg()[0],
        "",
        "| step | ms |",
        "|---|---|",
        "| the lane: opening it (`Host.open_lane()`: a session on the open connection, "
        "the remote shell, the relay's boot), wall / master CPU (process) | %s / %s |"
        % (c.ms(lane_open[0]), c.ms(lane_open[1])),
        "| `Host.call(trivial, 1)` on the lane (the context's lane thread: no broker on "
        "either side) | %s |" % c.ms(st["call"].median),
        "| of which there (send → running on the host) / back (→ caller awake) | %s / %s |"
        % (c.ms(halves["lane"][0]), c.ms(halves["lane"][1])),
        "| the lane's floor: a line echoed by `cat` through a session on the host's own "
        "ControlMaster connection (the lane's path, measured interleaved with the calls), "
        "the reader asleep in read / awake, as a `Host.call` waits (poll(0) and "
        "sched_yield for up to `SPIN_FOR`) | %s / %s |"
        % (c.ms(st["lane_floor"].median), c.ms(st["lane_floor_awake"].median)),
        "| the lane's Python per call, no I/O: master (pickle the request, read the reply) "
        "/ host (read the request, call, pickle the reply) | %s / %.3f |"
        % (c.ms(master_costs), host_costs["call"]),
        "| the rest: `Host.call` on the lane - its floor (awake) - both ends' Python "
        "(the host's Python thread's wake-up, a poll more there, the calling layers) | %s |"
        % c.ms(st["call"].median - st["lane_floor_awake"].median - lane_python),
        '| `Host.run(["true"])` on the lane (spawn + wait on the lane thread) | %s |'
        % c.ms(st["run"].median),
        "| of which on the host (`RunResult.duration`) / the rest: round trip, pickling "
        "| %s / %s |" % (c.ms(remote_run.median), c.ms(run_trip)),
        "| pickling a `Host.run` reply on the host (protocol 3: bytes as bytes) | %.3f |"
        % host_costs["run_reply"],
        "| master CPU per `Host.call` on the lane: calling thread + broker thread | %s + %s |"
        % (c.ms(cpu["call"][0]), c.ms(cpu["call"][1])),
        "| master CPU per `Host.run` on the lane: calling thread + broker thread | %s + %s |"
        % (c.ms(cpu["run"][0]), c.ms(cpu["run"][1])),
        "| — mitogen's path (lane disabled), as before the lane: — | |",
        "| master only: caller → master broker → caller (a handler on the master's own "
        "router; no ssh, no host): the master's two hand-offs | %s |" % c.ms(st["loop"].median),
        "| the floor: a line echoed by `cat` through an open ssh session | %s |"
        % c.ms(echo.median),
        "| `Host.call` of a `@rx.quick` function: served on the context's broker thread "
        "(no hand-off on the host) | %s |" % c.ms(st["quick"].median),
        "| of which there (send → running on the host) / back (→ caller awake) | %s / %s |"
        % (c.ms(halves["quick"][0]), c.ms(halves["quick"][1])),
        "| raw mitogen `context.call(trivial, 1)` (main thread; no remoteexec) | %s |"
        % c.ms(st["raw"].median),
        "| of which there / back | %s / %s |" % (c.ms(halves["raw"][0]), c.ms(halves["raw"][1])),
        "| `Host.call(trivial, 1)` (main thread, through `call_function`) | %s |"
        % c.ms(st["call_mitogen"].median),
        "| the host's two hand-offs (broker → main thread → broker): raw call - quick call "
        "| %s |" % c.ms(st["raw"].median - st["quick"].median),
        '| `Host.service("ping")` (a quick service: the broker thread) | %s |'
        % c.ms(st["ping"].median),
        "| the same ping through the supervisor's thread pool (`Host.invoke`), as every "
        "service call went before quick calls | %s |" % c.ms(st["pool"].median),
        '| `Host.run(["true"])` round trip less its time on the host (pickling, the pool) '
        "| %s |" % c.ms(run_trip_mitogen),
        '| `Host.run(["true"])` (the pool thread) | %s |' % c.ms(st["run_mitogen"].median),
        "| of which on the host, spawn + reap of `true` (`RunResult.duration`) | %s |"
        % c.ms(remote_run_mitogen.median),
        '| in the context, `target.run.run(["true"])` itself (marker, guard told, spawn, '
        "read, reap) | %.3f |" % spawn["run"],
        "| Popen as Host.run does it (vfork, new session, close_fds, two bare pipes read "
        "by one poll loop), the guard told | %.3f |" % spawn["popen_told"],
        "| the same, the guard not told (its tell: the boot clock read around the fork, "
        "a line into the guard's pipe, which does not wake it) | %.3f |"
        % spawn["popen_bare_pipes"],
        "| the guard's tell alone, of a process that runs already (in-thread part) | %.3f |"
        % spawn["tell_self"],
        "| Popen with two pipes and communicate (before: file objects, a selector) | %.3f |"
        % spawn["popen"],
        "| the same without close_fds | %.3f |" % spawn["popen_keep_fds"],
        "| the same with no pipes (output to /dev/null) | %.3f |" % spawn["popen_no_pipes"],
        "| `posix_spawnp` + two pipes read to EOF + `waitpid` | %.3f |"
        % spawn["posix_spawn_pipes"],
        "| bare `posix_spawnp` + `waitpid` (no pipes): the spawn floor | %.3f |"
        % spawn["posix_spawn"],
        "| the same after an untimed pause as long as a `Host.call` on the lane (the "
        "host idles between two lane requests): the spawn floor as `Host.run` meets it "
        "| %.3f |" % spawn["posix_spawn_idle"],
        "| master CPU per `Host.call`: calling thread + broker thread | %s + %s |"
        % (c.ms(cpu["call_mitogen"][0]), c.ms(cpu["call_mitogen"][1])),
        "| master CPU per `Host.run`: calling thread + broker thread | %s + %s |"
        % (c.ms(cpu["run_mitogen"][0]), c.ms(cpu["run_mitogen"][1])),
        "",
        "A normal call crosses four thread hand-offs (caller → master broker → ssh … sshd → "
        "context broker → main thread or pool thread → context broker → … → master broker "
        "→ caller), each a wake-up through a pipe, plus two ssh processes each way; the "
        "echo floor has only the ssh processes. A quick call (`@rx.quick`, and the quick "
        "supervisor services: ping, status, output, signal) skips the two on the host. "
        "Host.run's floor is the spawn floor plus a quick round trip. The lane has none "
        "of the four hand-offs: the caller writes to the ssh client's pipe and waits for "
        "the reply awake (a call: up to `SPIN_FOR`) or asleep in poll (a run); on the "
        "host the lane thread sleeps in poll on sshd's pipe, runs the call or the spawn "
        "itself and writes the reply: the echo floor plus the two ends' pickling and the "
        "call.",
    )
    report.text(
        "Where the time goes (medians, ms):",
        "",
        '- supervisor service round trip (`Host.service("ping")`, quick: broker thread): '
        "%s; `Host.call` through mitogen (main thread): %s; `@rx.quick` call: %s; "
        "`Host.call` on the lane: %s"
        % (
            c.ms(st["ping"].median),
            c.ms(st["call_mitogen"].median),
            c.ms(st["quick"].median),
            c.ms(st["call"].median),
        ),
        '- `Host.run(["true"])` on the lane %s ≈ remote spawn+wait of `true` %s '
        "(`RunResult.duration`) + round trip and (un)pickling %s; through mitogen %s ≈ %s + %s"
        % (
            c.ms(st["run"].median),
            c.ms(remote_run.median),
            c.ms(run_trip),
            c.ms(st["run_mitogen"].median),
            c.ms(remote_run_mitogen.median),
            c.ms(run_trip_mitogen),
        ),
        "- the limits, from this run's figures: on mitogen's path Host.call cannot go below "
        "the master's two hand-offs %s plus the ssh floor %s plus the host's unpickle and "
        "reply, which a quick call already is (%s); the lane has no hand-off: its floor %s "
        "(a line through a session of the same connection, the reader awake as a "
        "`Host.call` waits) plus both ends' Python %s "
        "= %s, against %s measured. Host.run cannot go below the spawn floor as it meets it, "
        "%.3f (bare posix_spawnp + waitpid in the context after a pause as long as a lane "
        "call; %.3f back to back), plus a lane round trip %s = %.3f; Popen as Host.run "
        "uses it, the guard told, costs %.3f over the bare spawn"
        % (
            c.ms(st["loop"].median),
            c.ms(echo.median),
            c.ms(st["quick"].median),
            c.ms(st["lane_floor_awake"].median),
            c.ms(lane_python),
            c.ms(st["lane_floor_awake"].median + lane_python),
            c.ms(st["call"].median),
            spawn["posix_spawn_idle"],
            spawn["posix_spawn"],
            c.ms(st["call"].median),
            spawn["posix_spawn_idle"] + st["call"].median * 1e3,
            spawn["popen_told"] - spawn["posix_spawn"],
        ),
        "- Fabric starts the login shell for every command (`$SHELL -c true`); on this machine "
        "root's ~/.bashrc (read by bash under sshd) adds %s. Without it Fabric would be ≈%s, "
        "still %s Host.run."
        % (c.ms(shell_init), c.ms(adjusted), c.ratio(adjusted, st["run"].median)),
    )
    report.target(
        "Host.run median (the lane)",
        "%s ms" % c.ms(st["run"].median),
        "≤ %g ms" % RUN_TARGET_MS,
        st["run"].median * 1e3 <= RUN_TARGET_MS,
    )
    report.target(
        "Host.call median (the lane)",
        "%s ms" % c.ms(st["call"].median),
        "≤ %g ms" % CALL_TARGET_MS,
        st["call"].median * 1e3 <= CALL_TARGET_MS,
    )
    report.target(
        "faster than Fabric per command (median Fabric / Host.run)",
        c.ratio(fab.median, st["run"].median),
        "≥ %gx" % FABRIC_FACTOR,
        fab.median >= FABRIC_FACTOR * st["run"].median,
    )
    return report


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
