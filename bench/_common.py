"""Shared helpers for the benchmarks in bench/.

Importing this module puts the repository root on ``sys.path``, so
``python bench/<name>.py`` works without installing the package.

The interface every benchmark follows (``run_all.py`` relies on it):

- ``run() -> Report``: measures, returns the results (markdown + verdicts);
- ``main() -> int``: prints ``run().markdown()`` on stdout and returns 0 when
  every target passed, 1 when a target was missed, 2 when it was skipped
  because something it needs is not installed or not possible here (the lab
  needs root, iproute2, openssh-server; the baselines need their peer tool).
  A benchmark that raises is a failure (3 from ``run_all.py``), never a skip.

Progress goes to stderr, so stdout is exactly the markdown.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# The benchmarks' loopback ports come from the lab, as the tests' do (re-exported).
from remoteexec.lab import free_port as free_port  # noqa: E402 - needs the path above

#: Debian's interpreter: present on this machine and on every lab host (they
#: share the filesystem). Absolute, so no pyenv shim or PATH lookup is timed.
PY = "/usr/bin/python3"

EXIT_OK, EXIT_MISSED, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2, 3


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries only the markdown)."""
    print("[bench] %s" % text, file=sys.stderr, flush=True)


def trivial(x: int) -> int:
    """The function timed by ``Host.call``: one small argument, one small result."""
    return x


# -- timing ------------------------------------------------------------------


@dataclass
class Stats:
    """Summary of one series of timings, in seconds."""

    n: int
    median: float
    p90: float
    mean: float
    minimum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        rank = max(1, math.ceil(0.9 * len(ordered)))  # nearest-rank p90
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p90=ordered[rank - 1],
            mean=statistics.fmean(ordered),
            minimum=ordered[0],
        )


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 0) -> List[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times; each duration in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def ms(seconds: float) -> str:
    return "%.3f" % (seconds * 1e3)


def ratio(a: float, b: float) -> str:
    return "%.1fx" % (a / b) if b > 0 else "n/a"


# -- reporting ---------------------------------------------------------------


@dataclass
class Target:
    name: str
    measured: str
    limit: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


@dataclass
class Report:
    """One benchmark's results: markdown blocks plus target verdicts."""

    title: str
    blocks: List[str] = field(default_factory=list)
    targets: List[Target] = field(default_factory=list)
    skipped: Optional[str] = None

    def text(self, *lines: str) -> None:
        self.blocks.append("\n".join(lines))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.blocks.append("\n".join(out))

    def target(self, name: str, measured: str, limit: str, passed: bool) -> None:
        self.targets.append(Target(name, measured, limit, bool(passed)))

    @property
    def missed(self) -> List[Target]:
        return [t for t in self.targets if not t.passed]

    @property
    def exit_code(self) -> int:
        if self.skipped is not None:
            return EXIT_SKIPPED
        return EXIT_MISSED if self.missed else EXIT_OK

    def markdown(self, level: int = 2) -> str:
        parts = ["%s %s" % ("#" * level, self.title)]
        if self.skipped is not None:
            parts.append("**SKIPPED**: %s" % self.skipped)
            return "\n\n".join(parts) + "\n"
        parts += self.blocks
        if self.targets:
            rows = [(t.name, t.measured, t.limit, "**%s**" % t.verdict) for t in self.targets]
            out = ["| target | measured | limit | result |", "|---|---|---|---|"]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            parts.append("Targets:\n\n" + "\n".join(out))
        return "\n\n".join(parts) + "\n"


def bench_main(run: Callable[[], Report]) -> int:
    """The body of every benchmark's ``main()``: print the markdown, return the status."""
    report = run()
    print(report.markdown())
    for t in report.targets:
        progress("%s %s: %s (limit %s)" % (t.verdict, t.name, t.measured, t.limit))
    return report.exit_code


# -- lab ---------------------------------------------------------------------


def lab_report(title: str, needs: Sequence[str] = ()) -> Report:
    """A new Report for a lab benchmark, already marked skipped when no lab can
    be built or a module in ``needs`` (the baseline's peer tool) is not installed."""
    import importlib.util

    from remoteexec.lab import Lab

    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        why = "%s not installed (pip install -e '.[test,bench]')" % ", ".join(missing)
        return Report(title, skipped=why)
    ok, why = Lab.available()
    return Report(title, skipped=None if ok else why)


def connect_options(lab: Any) -> Dict[str, Any]:
    """``Master.connect``/``connect_all`` options for lab hosts: the lab's key and
    known_hosts (strict host key checking, as the tests connect), Debian's python."""
    return lab.connect_options(python=PY, connect_timeout=10)


@contextlib.contextmanager
def lab_host(heartbeat_timeout: float = 10.0) -> Iterator[Tuple[Any, Any]]:
    """A fresh one-host lab, a Master and a Host connected to it; all removed after.

    Yields ``(lab, host)``. Strict host key checking stays on (the lab's
    known_hosts file), exactly as the tests connect.
    """
    import remoteexec as rx
    from remoteexec.lab import Lab

    t0 = time.perf_counter()
    with Lab(hosts=1) as lab:
        progress("lab %s up in %.2fs: %s" % (lab.name, time.perf_counter() - t0, lab.targets[0]))
        with rx.Master(heartbeat_timeout=heartbeat_timeout) as master:
            t1 = time.perf_counter()
            host = master.connect(lab.targets[0], **connect_options(lab))
            progress("connected to %s in %.2fs" % (host.name, time.perf_counter() - t1))
            yield lab, host
    progress("lab removed")


# -- machine facts -----------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "unknown (%s)" % e
    return (out.strip().splitlines() or ["unknown"])[0]


def machine_facts() -> List[Tuple[str, str]]:
    """(name, value) pairs describing where the numbers were measured."""
    import mitogen

    return [
        ("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("machine", "%s, nproc=%s" % (platform.platform(), _first_line(["nproc"]))),
        ("cpu", _cpu_model()),
        ("python (master)", "%s (%s)" % (platform.python_version(), sys.executable)),
        ("python (targets)", _first_line([PY, "--version"])),
        ("mitogen", ".".join(str(p) for p in mitogen.__version__)),
        ("tarantool", _first_line(["tarantool", "--version"])),
    ]


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
