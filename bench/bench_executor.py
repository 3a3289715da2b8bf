"""TCPExecutor start→ready→stop: remoteexec on a lab host against plain mirakuru locally.

The service is ``python3 -m http.server PORT --bind 127.0.0.1`` (Debian's
/usr/bin/python3 on both sides, so no pyenv shim is timed). Four executors,
their rounds interleaved (rotating which goes first), for each ``sleep``
(mirakuru's default 0.1, then 0.01):

- remoteexec on a lab host over ssh (``rx.TCPExecutor(..., on=host)``: spawn,
  readiness and stop all happen in the host's context);
- remoteexec on a local context (no ssh: what the context itself costs);
- mirakuru 3.1 on this machine with the same ``sleep``;
- mirakuru with ``sleep=0.005``: the fair baseline. remoteexec polls from
  5 ms (then a tenth of the time waited, up to ``sleep``) and mirakuru at a
  fixed ``sleep``, so most of the gain against mirakuru's default comes from polling more often; the
  fair comparison polls mirakuru at least as often as remoteexec.

Run: ``python bench/bench_executor.py`` (needs root for the lab).
"""

from __future__ import annotations

import contextlib
import time

import _common as c

ROUNDS = 20
WARMUP = 2
SLEEPS = (0.1, 0.01)
FAIR_SLEEP = 0.005  # remoteexec's first poll interval
REMOTE_PORT = 18080  # the lab host is its own network namespace: always free
FACTOR = 1.3
#: (key, label) of every executor measured, in table order.
KINDS = (
    ("remote", "remoteexec, lab host"),
    ("rx-local", "remoteexec, local context"),
    ("mirakuru", "mirakuru, local"),
    ("fair", "mirakuru, local, sleep=%g" % FAIR_SLEEP),
)


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


def _measure(host, local, sleep: float):
    """Interleaved rounds for one ``sleep``; {kind: [(start, stop, total)]}."""
    import mirakuru

    import remoteexec as rx

    ports = [c.free_port() for _ in range(3)]
    executors = {
        "remote": rx.TCPExecutor(
            _server(REMOTE_PORT),
            host="127.0.0.1",
            port=REMOTE_PORT,
            on=host,
            timeout=30,
            sleep=sleep,
        ),
        "rx-local": rx.TCPExecutor(
            _server(ports[0]), host="127.0.0.1", port=ports[0], on=local, timeout=30, sleep=sleep
        ),
        "mirakuru": mirakuru.TCPExecutor(
            _server(ports[1]), host="127.0.0.1", port=ports[1], timeout=30, sleep=sleep
        ),
        "fair": mirakuru.TCPExecutor(
            _server(ports[2]), host="127.0.0.1", port=ports[2], timeout=30, sleep=FAIR_SLEEP
        ),
    }
    results = {name: [] for name in executors}
    names = list(executors)
    try:
        for ex in executors.values():
            for _ in range(WARMUP):
                _cycle(ex)
        for i in range(ROUNDS):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                results[name].append(_cycle(executors[name]))
    finally:
        for ex in executors.values():
            with contextlib.suppress(Exception):
                if ex.running():
                    ex.kill()
    return results


def run() -> c.Report:
    report = c.lab_report(
        "TCPExecutor start→ready→stop: lab host (remoteexec) vs local mirakuru", ["mirakuru"]
    )
    if report.skipped:
        return report
    import mirakuru

    measured = {}
    with c.lab_host() as (_lab, host):
        local = host.master.local()
        for sleep in SLEEPS:
            c.progress("sleep=%g: %d interleaved rounds each" % (sleep, ROUNDS))
            measured[sleep] = _measure(host, local, sleep)

    report.text(
        "`%s` (PORT free), %d rounds each after %d warm-up rounds, the four executors' "
        "rounds interleaved (rotating which goes first), in one run. remoteexec: "
        "`rx.TCPExecutor(..., on=<lab host>)` over ssh, and on a local context "
        "(`on=master.local()`, no ssh); readiness checked in the context. Baselines: "
        "mirakuru %s `TCPExecutor` on this machine with the same `sleep`, and with "
        "`sleep=%g`. remoteexec polls from 5 ms, then every tenth of the time waited, "
        "up to `sleep`; mirakuru polls "
        "at a fixed `sleep`, so against mirakuru's default most of the gain is polling "
        "frequency: the `sleep=%g` row is the fair baseline. Times in ms (median; p90 for "
        "the total)."
        % (
            " ".join(_server("PORT")),
            ROUNDS,
            WARMUP,
            mirakuru.__version__,
            FAIR_SLEEP,
            FAIR_SLEEP,
        )
    )
    rows = []
    for sleep, res in measured.items():
        st = {
            name: [c.Stats.of([r[k] for r in rounds]) for k in range(3)]
            for name, rounds in res.items()
        }
        for name, label in KINDS:
            start, stop, total = st[name]
            rows.append(
                (
                    "%g" % sleep if name != "fair" else "%g" % FAIR_SLEEP,
                    label,
                    c.ms(start.median),
                    c.ms(stop.median),
                    c.ms(total.median),
                    c.ms(total.p90),
                )
            )
        total = {name: st[name][2].median for name, _label in KINDS}
        # The fair baseline is a target only where our polling is as fine as its
        # own (sleep=0.01: 5 ms, then 10 ms); at sleep=0.1 we poll up to 100 ms
        # apart by design, so that row is reported in the text, not judged.
        compared = [("mirakuru", "same sleep")]
        if sleep == min(SLEEPS):
            compared.append(("fair", "sleep=%g" % FAIR_SLEEP))
        for name, what in compared:
            report.target(
                "start→ready→stop, sleep=%g: lab host / mirakuru %s (median)" % (sleep, what),
                "%.2fx (%s vs %s ms)"
                % (total["remote"] / total[name], c.ms(total["remote"]), c.ms(total[name])),
                "≤ %gx" % FACTOR,
                total["remote"] <= FACTOR * total[name],
            )
        report.text(
            "sleep=%g, medians of the total: lab host %s ms, local context %s ms, mirakuru "
            "%s ms, mirakuru sleep=%g %s ms. Local context / mirakuru sleep=%g: %s."
            % (
                sleep,
                c.ms(total["remote"]),
                c.ms(total["rx-local"]),
                c.ms(total["mirakuru"]),
                FAIR_SLEEP,
                c.ms(total["fair"]),
                FAIR_SLEEP,
                "%.2fx" % (total["rx-local"] / total["fair"]),
            )
        )
    report.table(["sleep", "executor", "start", "stop", "total", "total p90"], rows)
    return report


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
