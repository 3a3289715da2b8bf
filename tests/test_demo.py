"""``remoteexec demo``: the example stack up, proven through its tiers, torn down.

Run as a user runs it (a subprocess); while it runs, the tests' own /proc
oracle samples every process of its run (from the run id and context pids
the demo prints), and after it exits none of them may be alive.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional, Tuple

import pytest
from conftest import REPO, need_lab, need_tarantool, seen_then_gone

#: A lab, a replica set and two more services: a few seconds alone, far more
#: on this machine under other suites' load.
DEMO_TIMEOUT = 180.0
RUN_LINE = re.compile(r"^run (\S+), contexts ([\d,]+)$")


class Demo:
    """A demo subprocess whose output is read by a thread as it comes."""

    def __init__(self, *args: str, module: str = "remoteexec") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self.lines: List[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self.reader = threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True)
        self.reader.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def run_line(self, timeout: float) -> Optional[Tuple[str, List[int]]]:
        """(run id, context pids) once the demo printed them; None if it exited first."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 1):  # bounded by count and time
            for line in list(self.lines):
                found = RUN_LINE.match(line.strip())
                if found:
                    return found.group(1), [int(p) for p in found.group(2).split(",")]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return None

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(10)
        return code


def run_demo(*args: str, at_least: int, module: str = "remoteexec") -> Tuple[int, str]:
    """Run the demo; its exit code and output. At least ``at_least`` processes
    of its run were seen while it ran, and none is left after it."""
    demo = Demo(*args, module=module)
    started = time.monotonic()
    try:
        found = demo.run_line(DEMO_TIMEOUT)
        assert found is not None, "the demo printed no run line:\n" + demo.text
        run_id, contexts = found
        with seen_then_gone(run_id, contexts, at_least=at_least, timeout=20):
            code = demo.wait(max(1.0, DEMO_TIMEOUT - (time.monotonic() - started)))
    finally:
        if demo.proc.poll() is None:
            demo.wait(1)
    return code, demo.text


def assert_the_chain_was_proven(out: str, apis: int) -> None:
    # Every tier came up, each after what it depends on.
    at = {}
    for service in ("storage", "sessions", "router", "api"):
        found = [m.start() for m in re.finditer(r"^  ready +%s(\.\d)? " % service, out, re.M)]
        assert found, (service, out)
        at[service] = (min(found), max(found))
    assert max(at["storage"][1], at["sessions"][1]) < at["router"][0] < at["api"][0], out
    # Every api answers /health, from another host, with the price the router
    # read from storage...
    health = re.findall(r'GET +http://\S+/health +-> 200 .*"price": 3, "router": "router ', out)
    assert len(health) == apis, out
    # ...and writes through api -> router -> both leaders are read back on a
    # read-only replica of each replica set.
    assert re.search(r"PUT +http://\S+/price/kiwi/7 +-> 200", out), out
    assert re.search(r'PUT +http://\S+/cart/ann/apple +-> 200 \{"user": "ann", "total": 10', out)
    assert re.search(r"on the storage replica \S+ \(read-only True\): \['kiwi', 7\]", out), out
    assert re.search(r"on the sessions replica \S+ \(read-only True\): \['ann', 10\]", out), out
    # down() stopped the stack itself (closing the master would kill it too).
    assert re.search(r"^down in \d+ ms$", out, re.M), out
    assert "torn down: 0 processes of this run left" in out


@pytest.mark.lab
def test_demo_on_a_lab_exits_0_and_leaves_nothing() -> None:
    """The README's command: examples/shop.toml on 3 lab hosts."""
    need_lab()
    need_tarantool()
    # 2 x 3 replica set members, the router, 3 apis.
    code, out = run_demo("demo", at_least=10)
    assert code == 0, out
    assert "examples/shop.toml" in out and re.search(r"^lab \S+: root@", out, re.M), out
    assert_the_chain_was_proven(out, apis=3)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    lab = re.search(r"^lab (\S+):", out, re.M)
    assert lab is not None and "rxl-%s-" % lab.group(1) not in netns


def test_demo_local_exits_0_and_leaves_nothing() -> None:
    """``--local``: examples/shop-local.toml on three local contexts."""
    need_tarantool()
    # 2 x 3 replica set members, the router, the api.
    code, out = run_demo("demo", "--local", at_least=8)
    assert code == 0, out
    assert "examples/shop-local.toml" in out and "(local contexts)" in out, out
    assert_the_chain_was_proven(out, apis=1)


def test_a_broken_tier_fails_the_demo_naming_service_and_host(tmp_path: Any) -> None:
    """A variant of the example whose api cannot start: exit 1, the reason
    names the service and its host, and what had started is gone."""
    need_tarantool()
    shutil.copytree(os.path.join(REPO, "examples", "shop"), str(tmp_path / "shop"))
    with open(os.path.join(REPO, "examples", "shop-local.toml"), encoding="utf-8") as f:
        text = f.read()
    assert '"--port", "8090"' in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace('"--port", "8090"', '"--port", "not-a-port"'))
    # The replica sets and the router were up when the api failed.
    code, out = run_demo("--local", str(path), at_least=7, module="remoteexec.cli.demo")
    assert code == 1, out
    assert re.search(r"^demo failed: \[c\] stack shop-local: service api failed", out, re.M), out
    assert "invalid int value: 'not-a-port'" in out, "the api's own output is shown"
    assert "torn down: 0 processes of this run left" in out


def test_a_missing_example_is_a_clear_error() -> None:
    """Outside a checkout the example is not there: the error says where it
    was looked for and how the demo is meant to run."""
    from remoteexec.cli import demo

    with pytest.raises(demo.DemoError, match=r"examples/nope\.toml is not at /\S+/examples/nope"):
        demo.examples_path(os.path.join("examples", "nope.toml"))
    assert demo.examples_path(demo.LAB_FILE) == os.path.join(REPO, "examples", "shop.toml")
