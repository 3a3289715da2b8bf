"""TCPExecutor start→ready→stop: remoteexec on a lab host against plain mirakuru locally.

The service is ``python3 -m http.server PORT --bind 127.0.0.1`` (Debian's
/usr/bin/python3 on both sides, so no pyenv shim is timed). remoteexec runs it
on a lab host over ssh (``rx.TCPExecutor(..., on=host)``: spawn, readiness
and stop all happen in the host's context); mirakuru 3.1 runs it on this
machine. Rounds alternate between the two (and which goes first), with the
same ``sleep`` for both: mirakuru's default 0.1, then 0.01.

Run: ``python bench/bench_executor.py`` (needs root for the lab).
"""

from __future__ import annotations

import contextlib
import time

import _common as c

ROUNDS = 20
WARMUP = 2
SLEEPS = (0.1, 0.01)
REMOTE_PORT = 18080  # the lab host is its own network namespace: always free
FACTOR = 1.3


def _server(port: object):
    return [c.PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def _cycle(ex):
    """start→ready→stop once; (start, stop, total) in seconds."""
    t0 = time.perf_counter()
    ex.start()
    t1 = time.perf_counter()
    ex.stop()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, t2 - t0


def _measure(host, sleep: float):
    """Interleaved rounds for one ``sleep``; {"remote"|"local": [(start, stop, total)]}."""
    import mirakuru

    import remoteexec as rx

    port = c.free_port()
    executors = {
        "remote": rx.TCPExecutor(
            _server(REMOTE_PORT),
            host="127.0.0.1",
            port=REMOTE_PORT,
            on=host,
            timeout=30,
            sleep=sleep,
        ),
        "local": mirakuru.TCPExecutor(
            _server(port), host="127.0.0.1", port=port, timeout=30, sleep=sleep
        ),
    }
    results = {name: [] for name in executors}
    try:
        for ex in executors.values():
            for _ in range(WARMUP):
                _cycle(ex)
        for i in range(ROUNDS):
            order = ("remote", "local") if i % 2 == 0 else ("local", "remote")
            for name in order:
                results[name].append(_cycle(executors[name]))
    finally:
        for ex in executors.values():
            with contextlib.suppress(Exception):
                if ex.running():
                    ex.kill()
    return results


def run() -> c.Report:
    report = c.lab_report("TCPExecutor start→ready→stop: lab host (remoteexec) vs local mirakuru")
    if report.skipped:
        return report
    import mirakuru

    measured = {}
    with c.lab_host() as (_lab, host):
        for sleep in SLEEPS:
            c.progress("sleep=%g: %d interleaved rounds each" % (sleep, ROUNDS))
            measured[sleep] = _measure(host, sleep)

    report.text(
        "`%s` (PORT free), %d rounds each after %d warm-up rounds, remote and local rounds "
        "alternating (and alternating which goes first), in one run. remoteexec: "
        "`rx.TCPExecutor(..., on=<lab host>)` over ssh, readiness checked on the host. "
        "Baseline: mirakuru %s `TCPExecutor` on this machine. Same `sleep` for both. "
        "Times in ms (median; p90 for the total)."
        % (" ".join(_server("PORT")), ROUNDS, WARMUP, mirakuru.__version__)
    )
    rows = []
    for sleep, res in measured.items():
        st = {
            name: [c.Stats.of([r[k] for r in rounds]) for k in range(3)]
            for name, rounds in res.items()
        }
        for name, label in (("remote", "remoteexec, lab host"), ("local", "mirakuru, local")):
            start, stop, total = st[name]
            rows.append(
                (
                    "%g" % sleep,
                    label,
                    c.ms(start.median),
                    c.ms(stop.median),
                    c.ms(total.median),
                    c.ms(total.p90),
                )
            )
        remote, local = st["remote"][2].median, st["local"][2].median
        report.target(
            "start→ready→stop, sleep=%g (remote / local median)" % sleep,
            "%.2fx (%s vs %s ms)" % (remote / local, c.ms(remote), c.ms(local)),
            "≤ %gx" % FACTOR,
            remote <= FACTOR * local,
        )
    report.table(["sleep", "executor", "start", "stop", "total", "total p90"], rows)
    return report


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
