"""Context bootstrap: ``Master.connect_all`` on 8/16/32 lab hosts against raw mitogen.

Raw mitogen is the floor: ``router.ssh()`` with the very same ssh options
(key, known_hosts, strict host key checking, key exchange) and one
``context.call(os.getpid)``, from a thread pool of 16, on its own Broker,
booting mitogen's own preamble. remoteexec boots with its own first stage
and preamble (``mitogen.core`` compiled by the master, read raw from the
connection; see docs/more/internals.md) and adds its supervisor (modules,
service pool, watchdog; the guard starts with a host's first process, so
not here) in one round trip. remoteexec runs twice: cold (the targets'
bytecode cache emptied first: the master sends the modules compiled, the
host checks them and writes its pack) and warm (the cache a previous master
left).

The series are interleaved (raw, cold, warm for each N, repeated ROUNDS
times) and each figure is the median of the rounds. Per host:

- wall: ``connect_all`` (or the raw pool) from the first ssh to the last reply;
- master CPU: this process and its children (the ssh clients), / N;
- lab CPU: the master's plus everything the lab's sshds ran for it (the
  sshd sessions, the login shell, the contexts, the guards), counted by
  process from /proc, so the other work on the machine is left out;
- machine CPU: all CPUs busy time from /proc/stat, / N (includes whatever
  else runs on the machine: read it as an upper bound);
- context: the CPU the context's process used to get there, and its RSS.

Run: ``python bench/bench_connect.py`` (needs root for the lab).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import statistics
import time
from typing import Any, Dict, List, Sequence, Tuple

import _common as c

SIZES = (8, 16, 32)
ROUNDS = 3
RAW_WORKERS = 16
SHELL_N = 10

MACHINE_CPU_TARGET_MS = 150.0
MASTER_CPU_TARGET_MS = 50.0
RSS_TARGET_MB = 25.0
RAW_FACTOR = 1.1

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- accounting ---------------------------------------------------------------


def _stat(pid: int) -> Tuple[int, float, float]:
    """(ppid, own CPU s, reaped children's CPU s) of one process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / TICK
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return int(fields[1]), own, reaped


def _table() -> Dict[int, Tuple[int, float, float]]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                table[int(name)] = _stat(int(name))
    return table


def _tree_cpu(roots: Sequence[int]) -> float:
    """CPU seconds of ``roots`` and every live descendant, each with the CPU
    of the children it reaped."""
    table = _table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1] + table[pid][2]
        todo += children.get(pid, [])
    return total


def _descendants(roots: Sequence[int]) -> int:
    table = _table()
    return sum(1 for pid, (ppid, _, _) in table.items() if ppid in roots)


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


class Meter:
    """CPU of the master's tree, of the lab's sshd trees, and of the machine."""

    def __init__(self, sshd_pids: Sequence[int]) -> None:
        self.sshd_pids = list(sshd_pids)
        self.master = _tree_cpu([os.getpid()])
        self.lab = _tree_cpu(self.sshd_pids)
        self.machine = _machine_busy()
        self.t0 = time.perf_counter()

    def stop(self) -> Dict[str, float]:
        wall = time.perf_counter() - self.t0
        master = _tree_cpu([os.getpid()]) - self.master
        lab = _tree_cpu(self.sshd_pids) - self.lab
        return {
            "wall": wall,
            "master": master,
            "lab": master + lab,
            "machine": _machine_busy() - self.machine,
        }


def _proc_facts(pid: int) -> Tuple[float, float]:
    """(CPU s, RSS bytes) of one live process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def _settle(sshd_pids: Sequence[int], timeout: float = 20.0) -> None:
    """Wait until the sshds have no sessions left (the last round's ended),
    so their CPU does not land in the next round's figures."""
    deadline = time.monotonic() + timeout
    while _descendants(sshd_pids) and time.monotonic() < deadline:
        time.sleep(0.05)


# -- the three ways to connect ------------------------------------------------


def _raw(
    sshd: List[int], hosts: Sequence[Any], options: Dict[str, Any]
) -> Tuple[Dict[str, float], List[int]]:
    import mitogen.master

    from remoteexec.connectors.ssh import SSHConnector

    broker = mitogen.master.Broker(install_watcher=False)
    router = mitogen.master.Router(broker)
    try:
        plans = [SSHConnector.from_target(h.target, **options) for h in hosts]
        meter = Meter(sshd)

        def one(plan: Any) -> int:
            ctx = router.ssh(remote_name="raw", **plan.options)
            return int(ctx.call(os.getpid))

        with concurrent.futures.ThreadPoolExecutor(RAW_WORKERS) as pool:
            pids = list(pool.map(one, plans))
        figures = meter.stop()
        figures.update(_contexts(pids))
        figures.update(_shipped(router, len(plans)))
    finally:
        broker.shutdown()
        broker.join()
    return figures, pids


def _shipped(router: Any, n: int) -> Dict[str, float]:
    """Module requests and modules (and KB) mitogen's responder served, per host."""
    responder = router.responder
    return {
        "requests": responder.get_module_count / n,
        "modules": responder.good_load_module_count / n,
        "kb": responder.good_load_module_size / n / 1024.0,
    }


def _contexts(pids: Sequence[int]) -> Dict[str, float]:
    facts = [_proc_facts(p) for p in pids]
    return {
        "ctx_cpu": statistics.median(f[0] for f in facts),
        "ctx_rss": statistics.median(f[1] for f in facts),
    }


def _remoteexec(sshd: List[int], hosts: Sequence[Any], options: Dict[str, Any]) -> Dict[str, float]:
    import remoteexec as rx

    with rx.Master() as master:
        meter = Meter(sshd)
        connected = master.connect_all([h.target for h in hosts], **options)
        figures = meter.stop()
        figures.update(_contexts([h.info["pid"] for h in connected]))
        figures.update(_shipped(master.router, len(connected)))
        figures["cached"] = float(
            sum((h.info.get("bytecode_cache") or {}).get("cached", 0) for h in connected)
        )
    return figures


def _clear_cache(lab: Any) -> None:
    """Empty every lab host's bytecode cache (each host has its own home)."""
    import pwd

    try:
        from remoteexec.target import bytecache
    except ImportError:  # a tree without the cache (the "before" figures)
        return
    home = pwd.getpwnam(lab.user).pw_dir
    relative = bytecache.DEFAULT_DIR.replace("~", home, 1)
    for h in lab.hosts:
        bytecache.clear(h.path(relative))


# -- the benchmark ----------------------------------------------------------------


def _median(rows: List[Dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def run() -> c.Report:
    report = c.lab_report("Context bootstrap: connect_all vs raw mitogen (8/16/32 lab hosts)")
    if report.skipped:
        return report
    from remoteexec.lab import Lab

    t0 = time.perf_counter()
    results: Dict[Tuple[str, int], List[Dict[str, float]]] = {}
    with Lab(hosts=max(SIZES)) as lab:
        c.progress("lab %s up in %.1fs" % (lab.name, time.perf_counter() - t0))
        sshd = [h.sshd_pid for h in lab.hosts if h.sshd_pid]
        # A long connect timeout: 32 connections at once on a loaded 2-core
        # machine may take more than the usual 10 s to get through ssh.
        options = lab.connect_options(python=c.PY, connect_timeout=30)
        # One untimed connect each, so neither side pays the master's first-use
        # costs (mitogen finding and compressing modules) in a timed round.
        _raw(sshd, lab.hosts[:1], options)
        _remoteexec(sshd, lab.hosts[:1], options)
        for rnd in range(ROUNDS):
            for n in SIZES:
                hosts = lab.hosts[:n]
                for mode in ("raw", "cold", "warm"):
                    _settle(sshd)
                    if mode == "raw":
                        figures, _ = _raw(sshd, hosts, options)
                    else:
                        if mode == "cold":
                            _clear_cache(lab)
                        figures = _remoteexec(sshd, hosts, options)
                    figures["n"] = n
                    results.setdefault((mode, n), []).append(figures)
                    c.progress("round %d N=%d %s: %.2fs" % (rnd + 1, n, mode, figures["wall"]))
    return _report(report, results)


def _report(report: c.Report, results: Dict[Tuple[str, int], List[Dict[str, float]]]) -> c.Report:
    rows = []
    for n in SIZES:
        for mode in ("raw", "cold", "warm"):
            r = results[(mode, n)]
            lab_cpu = _median(r, "lab") / n
            rows.append(
                (
                    n,
                    {"raw": "raw mitogen", "cold": "remoteexec cold", "warm": "remoteexec warm"}[
                        mode
                    ],
                    "%.2f" % _median(r, "wall"),
                    "%.2fx" % (_median(r, "wall") / _median(results[("raw", n)], "wall")),
                    "%.0f" % (_median(r, "master") / n * 1e3),
                    "%.0f" % (lab_cpu * 1e3),
                    "%.0f" % (_median(r, "machine") / n * 1e3),
                    "%.0f" % (_median(r, "ctx_cpu") * 1e3),
                    "%.1f" % (_median(r, "ctx_rss") / 1e6),
                    "%.0f / %.0f / %.0f"
                    % (_median(r, "requests"), _median(r, "modules"), _median(r, "kb")),
                )
            )
    report.text(
        "Each figure is the median of %d interleaved rounds; CPU in ms per host, RSS in MB "
        "per context (median). Same ssh options for all (the lab's key and known_hosts, "
        "strict host key checking, `KexAlgorithms=%s`). Raw mitogen connects 16 at a time; "
        "`connect_all` paces itself (`ConnectPacer`). Lab CPU: the master's process tree plus "
        "every process the lab's sshds ran for the connections (sessions, shells, contexts, "
        "guards), from /proc; machine CPU: /proc/stat, all CPUs, whatever else ran on the "
        "machine included (an upper bound). Modules shipped: mitogen's responder, per host "
        "(a request is a round trip; the modules a module imports travel with it)."
        % (ROUNDS, _kex()),
    )
    report.table(
        [
            "N",
            "how",
            "wall s",
            "/ raw",
            "master CPU",
            "lab CPU",
            "machine CPU",
            "context CPU",
            "context RSS",
            "module requests / modules / KB shipped",
        ],
        rows,
    )
    for n in (16, 32):
        raw = _median(results[("raw", n)], "wall")
        for mode in ("cold", "warm"):
            wall = _median(results[(mode, n)], "wall")
            report.target(
                "connect_all %s / raw mitogen, N=%d (median wall)" % (mode, n),
                "%.2fx (%.2f vs %.2f s)" % (wall / raw, wall, raw),
                "≤ %gx" % RAW_FACTOR,
                wall <= RAW_FACTOR * raw,
            )
    big = max(SIZES)
    cold, warm = results[("cold", big)], results[("warm", big)]
    master = _median(cold, "master") / big * 1e3
    report.target(
        "master CPU (process tree) per host, cold, N=%d" % big,
        "%.0f ms" % master,
        "≤ %g ms" % MASTER_CPU_TARGET_MS,
        master <= MASTER_CPU_TARGET_MS,
    )
    for label, rows_ in (("cold", cold), ("warm", warm)):
        whole = _median(rows_, "lab") / big * 1e3
        report.target(
            "whole-machine CPU per host (lab CPU), %s, N=%d" % (label, big),
            "%.0f ms" % whole,
            "≤ %g ms" % MACHINE_CPU_TARGET_MS,
            whole <= MACHINE_CPU_TARGET_MS,
        )
    rss = _median(cold, "ctx_rss") / 1e6
    report.target(
        "context RSS (median), N=%d" % big,
        "%.1f MB" % rss,
        "≤ %g MB" % RSS_TARGET_MB,
        rss <= RSS_TARGET_MB,
    )
    return report


def _kex() -> str:
    from remoteexec.connectors import ssh

    return str(getattr(ssh, "FAST_KEX", "ssh's default"))


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
