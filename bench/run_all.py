"""Run every benchmark and write the combined results to docs/benchmarks.md.

    python bench/run_all.py

Runs bench_commands, bench_executor, bench_connect and the optional ones
(bench_replicaset, bench_stack: the example stack; bench_scale: its default
run, 8..64 hosts) when their file exists and has ``main()``;
each makes and removes its own lab (needs root). The markdown is printed and
written to docs/benchmarks.md.
Exit status: 0 when every benchmark ran to the end, a missed target
included (a miss is a measured finding: it is printed as MISS in the
summary, in docs/benchmarks.md and on stderr); with ``--strict`` a miss
exits 1. 2 when a benchmark was skipped (what it needs is not installed or
not possible here: printed as SKIPPED with the reason), 3 when a benchmark
crashed (printed as FAILED with its traceback; a crash is never a skip).

A benchmark module is used through ``run()`` when it has one (returning a
``_common.Report``, or a markdown string); otherwise ``main()`` is called and
what it prints on stdout (or the string it returns) is taken as its markdown,
its int return as its status.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import time
import traceback
from typing import List, Optional, Tuple

import _common as c

BENCHES = ("bench_commands", "bench_executor", "bench_connect")
OPTIONAL = ("bench_replicaset", "bench_stack", "bench_scale")
OUTPUT = os.path.join(c.REPO_ROOT, "docs", "benchmarks.md")
README = os.path.join(c.REPO_ROOT, "README.md")
#: The README quotes bench_commands' figures between these marks; each run rewrites them.
QUOTE_BEGIN, QUOTE_END = "<!-- bench_commands -->", "<!-- /bench_commands -->"
STATUS = {
    c.EXIT_OK: "PASS",
    c.EXIT_MISSED: "MISS",
    c.EXIT_SKIPPED: "SKIPPED",
    c.EXIT_FAILED: "FAILED",
}


def _modules() -> List[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    found = list(BENCHES)
    for name in OPTIONAL:
        if os.path.exists(os.path.join(here, name + ".py")):
            found.append(name)
    return found


def _run_one(name: str) -> Optional[Tuple[str, int, List[c.Target]]]:
    """(markdown, status, targets) of one benchmark; failures become a section.

    None for an optional benchmark without ``main()`` (not ready yet).
    """
    c.progress("=== %s" % name)
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(name)
        if name in OPTIONAL and not callable(getattr(module, "main", None)):
            c.progress("%s has no main(): left out" % name)
            return None
        run = getattr(module, "run", None)
        if callable(run):
            result = run()
            if isinstance(result, c.Report):
                markdown, status, targets = result.markdown(), result.exit_code, result.targets
            elif isinstance(result, str):
                markdown, status, targets = result, c.EXIT_OK, []
            else:
                raise TypeError("%s.run() returned %r, not a Report or markdown" % (name, result))
        elif callable(getattr(module, "main", None)):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    code = module.main()
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else c.EXIT_FAILED
            markdown = code if isinstance(code, str) else out.getvalue()
            status, targets = (code if isinstance(code, int) else c.EXIT_OK), []
        else:
            raise TypeError("%s has neither run() nor main()" % name)
    except Exception:
        tail = traceback.format_exc()[-3000:]
        c.progress("%s FAILED:\n%s" % (name, tail))
        markdown = "## %s\n\n**FAILED** (crashed):\n\n```\n%s```\n" % (name, tail)
        status, targets = c.EXIT_FAILED, []
    c.progress("=== %s done in %.1fs" % (name, time.perf_counter() - t0))
    return (markdown.strip() or "## %s\n\n(no output)" % name) + "\n", status, targets


def _readme_quote(targets: List[c.Target], date: str) -> Optional[str]:
    """The README's sentence on per-command cost, from bench_commands' targets."""

    # By the names' start: a target may say which path it measured ("(the lane)").
    def find(start: str) -> Optional[str]:
        return next((str(t.measured) for t in targets if t.name.startswith(start)), None)

    run, call = find("Host.run median"), find("Host.call median")
    fabric = find("faster than Fabric per command")
    if run is None or call is None or fabric is None:
        c.progress("bench_commands' targets are not the ones the README quotes: not updated")
        return None
    return (
        "`Host.run` %s and `Host.call` %s (medians), %s faster per command than Fabric "
        "on the same host (measured %s)" % (run, call, fabric, date)
    )


def _quote_in_readme(quote: str) -> None:
    """Replace the text between the README's marks with ``quote``."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    begin, end = text.find(QUOTE_BEGIN), text.find(QUOTE_END)
    if begin < 0 or end < begin:
        c.progress("README.md has no %s...%s marks: not updated" % (QUOTE_BEGIN, QUOTE_END))
        return
    text = text[: begin + len(QUOTE_BEGIN)] + quote + text[end:]
    with open(README + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(README + ".tmp", README)
    c.progress("README.md quotes: %s" % quote)


def main(argv: Optional[List[str]] = None) -> int:
    strict = "--strict" in (sys.argv[1:] if argv is None else argv)
    facts = c.machine_facts()  # the date is when the run started
    results = [(name, _run_one(name)) for name in _modules()]
    sections = [(name, *result) for name, result in results if result is not None]
    summary = []
    for name, _md, status, targets in sections:
        state = STATUS.get(status, "FAILED (exit %s)" % status)
        for t in targets:
            summary.append((name, t.name, t.measured, t.limit, "**%s**" % t.verdict))
        if not targets or status in (c.EXIT_SKIPPED, c.EXIT_FAILED):
            summary.append((name, "(all)", "", "", "**%s**" % state))
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run_all.py` (one command; each benchmark builds and "
        "removes its own `remoteexec.lab`, so it needs root). Every figure is measured in "
        "the same run as its baseline.",
        "",
        "| | |",
        "|---|---|",
        *["| %s | %s |" % fact for fact in facts],
        "",
        "## Summary",
        "",
        "| benchmark | target | measured | limit | result |",
        "|---|---|---|---|---|",
        *["| %s |" % " | ".join(row) for row in summary],
        "",
    ]
    text = "\n".join(lines) + "\n" + "\n".join(md for _n, md, _s, _t in sections)
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    tmp = OUTPUT + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, OUTPUT)
    print(text)
    c.progress("written to %s" % os.path.relpath(OUTPUT, c.REPO_ROOT))
    for name, _md, status, targets in sections:
        c.progress("%s: %s" % (name, STATUS.get(status, "FAILED (exit %s)" % status)))
        quote = _readme_quote(targets, facts[0][1].split()[0])
        if name == "bench_commands" and status in (c.EXIT_OK, c.EXIT_MISSED) and quote:
            _quote_in_readme(quote)
    worst = max((status for _n, _m, status, _t in sections), default=c.EXIT_OK)
    for name, _md, _status, targets in sections:
        for t in targets:
            if t.verdict == "MISS":
                c.progress("MISS %s: %s" % (name, t.name))
    if worst == c.EXIT_MISSED and not strict:
        return c.EXIT_OK
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
