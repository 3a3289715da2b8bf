"""The pytest11 entry point ``remoteexec``: options, fixtures and hooks.

Loaded by pytest from the installed package (no conftest needed); see
:mod:`remoteexec.pytest` for what it offers. The hooks cost nothing to a
test that uses none of the plugin's fixtures, and loading it costs every
pytest run in the environment next to nothing: the library (mitogen, the
lab, the stack) is imported by the fixtures that use it, not here.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import pytest

if TYPE_CHECKING:
    import remoteexec as rx
    from remoteexec.host import Host
    from remoteexec.lab import Lab
    from remoteexec.pytest.tracked import Crash, Tracked
    from remoteexec.stack import Stack
    from remoteexec.stack import file as stackfile

#: The interpreter on lab hosts (they share this machine's /usr).
LAB_PYTHON = "/usr/bin/python3"
#: Seconds to open one host.
CONNECT_TIMEOUT = 10
#: The master's heartbeat: a host silent this long is lost (a partition must be shorter).
HEARTBEAT_TIMEOUT = 10.0
DEFAULT_ARTIFACTS = ".remoteexec-artifacts"


def in_ci(environ: Any = None) -> bool:
    """Whether the environment says CI: ``CI`` set and not empty, 0, false or no."""
    environ = os.environ if environ is None else environ
    return str(environ.get("CI", "")).strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(why: str) -> None:
    """Skip, saying ``why``; under CI fail instead: a green CI run must have run it."""
    if in_ci():
        pytest.fail("%s, and CI must not skip it (CI=%s)" % (why, os.environ.get("CI")))
    pytest.skip(why)


class PluginState:
    """The session's tracked fixtures, by the id of the value the tests get."""

    def __init__(self, artifacts: str, inventory: Optional[str]) -> None:
        self.artifacts = artifacts
        self.inventory = inventory
        self.tracked: Dict[int, Tracked] = {}
        #: Fixtures whose start failed, for the report of the setup that raised it.
        self.failed_setups: List[Tracked] = []


STATE = pytest.StashKey[PluginState]()
CRASHES = pytest.StashKey["List[Crash]"]()


def track(config: pytest.Config, fixture: str, stack: Stack, value: Any) -> Tracked:
    """Watch a factory fixture's stack while the tests that get ``value`` run."""
    from remoteexec.pytest.tracked import Tracked

    tracked = Tracked(fixture, stack, value)
    config.stash[STATE].tracked[id(value)] = tracked
    return tracked


def untrack(config: pytest.Config, value: Any) -> None:
    """Stop watching what :func:`track` watches for ``value``."""
    tracked = config.stash[STATE].tracked.pop(id(value), None)
    if tracked is not None:
        tracked.close()


def used(item: pytest.Item) -> List[Tracked]:
    """The tracked fixtures a test has (directly or through other fixtures)."""
    state = item.config.stash.get(STATE, None)
    funcargs: Dict[str, Any] = getattr(item, "funcargs", None) or {}
    if state is None or not state.tracked or not funcargs:
        return []
    found = [state.tracked.get(id(v)) for v in funcargs.values()]
    return [t for t in dict.fromkeys(found) if t is not None and t.value is not None]


# -- options -------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("remoteexec", "remoteexec: cross-host tests")
    group.addoption(
        "--rx-lab-hosts",
        type=int,
        default=3,
        metavar="N",
        help="hosts of the lab rx_lab builds (default 3)",
    )
    group.addoption(
        "--rx-inventory",
        default=None,
        metavar="FILE",
        help="a stack file whose [hosts] rx_hosts connects, instead of a lab",
    )
    group.addoption(
        "--rx-artifacts",
        default=DEFAULT_ARTIFACTS,
        metavar="DIR",
        help="where a failed test's logs, status and box.info go (default %s/)" % DEFAULT_ARTIFACTS,
    )


def pytest_configure(config: pytest.Config) -> None:
    hosts = config.getoption("rx_lab_hosts")
    if hosts < 1:
        raise pytest.UsageError("--rx-lab-hosts: N must be at least 1, got %d" % hosts)
    inventory = config.getoption("rx_inventory")
    if inventory is not None and not os.path.isfile(inventory):
        raise pytest.UsageError("--rx-inventory %s: no such file" % inventory)
    here = str(config.invocation_params.dir)
    artifacts = os.path.abspath(os.path.join(here, config.getoption("rx_artifacts")))
    config.stash[STATE] = PluginState(
        artifacts, None if inventory is None else os.path.abspath(os.path.join(here, inventory))
    )


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def rx_master() -> Iterator[rx.Master]:
    """The session's master: closing it at the end kills what is left on every host."""
    import remoteexec as rx

    with rx.Master(heartbeat_timeout=HEARTBEAT_TIMEOUT) as master:
        yield master


@pytest.fixture(scope="session")
def rx_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab of ``--rx-lab-hosts`` sshd hosts for the session (each xdist
    worker its own: a lab takes a free subnet of its own). Skips without
    root, saying why; fails instead under CI."""
    from remoteexec.lab import Lab

    ok, why = Lab.available()
    if not ok:
        skip_or_fail("rx_lab: lab unavailable: %s" % why)
    share = [str(request.config.rootpath)]
    invoked = str(request.config.invocation_params.dir)
    if invoked not in share:
        share.append(invoked)
    with Lab(hosts=request.config.getoption("rx_lab_hosts"), share=share) as lab:
        yield lab


@pytest.fixture(scope="session")
def rx_hosts(request: pytest.FixtureRequest, rx_master: rx.Master) -> List[Host]:
    """The connected hosts: ``--rx-inventory``'s (named as in the file, in its
    order), else the lab's (``rx_lab``)."""
    from remoteexec.stack import file as stackfile

    inventory = request.config.stash[STATE].inventory
    if inventory is not None:
        topology = read_inventory(inventory)
        opened = stackfile.connect(topology, rx_master)
        return [opened[name] for name in topology.hosts]
    lab: Lab = request.getfixturevalue("rx_lab")
    hosts: List[Host] = rx_master.connect_all(
        lab.targets, **lab.connect_options(python=LAB_PYTHON, connect_timeout=CONNECT_TIMEOUT)
    )
    return hosts


def read_inventory(path: str) -> stackfile.Topology:
    """The hosts of stack file ``path``, checked as the stack file checks
    them; a file of ``[defaults]`` and ``[hosts]`` alone is one too."""
    from remoteexec.stack import file as stackfile

    try:
        return stackfile.read(path)
    except stackfile.StackFileError as e:
        if [p.message.split(":")[0] for p in e.problems] != ["nothing to start"]:
            raise
        with open(path, encoding="utf-8") as f:
            text = f.read()
        hosts = [k[1] for k in stackfile.key_lines(text) if len(k) == 2 and k[0] == "hosts"]
        if not hosts:
            raise
    # Only hosts: checked with a stand-in service, never built.
    stub = '\n[services.rx-inventory]\non = "%s"\ncommand = ["true"]\n' % hosts[0]
    return stackfile.parse(text + stub, path)


# -- hooks -----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """After the fixtures: restore what an earlier test broke, then watch."""
    result = yield
    for tracked in used(item):
        tracked.restore()
        tracked.begin()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the test: a service that exited unexpectedly fails it."""
    watched = used(item)
    if not watched:
        return (yield)
    try:
        result = yield
    except BaseException:
        with contextlib.suppress(Exception):  # the test's own error goes first
            item.stash[CRASHES] = after_test(item, watched)
        raise
    crashes = after_test(item, watched)
    if crashes:
        pytest.fail(
            "a service exited unexpectedly while the test ran:\n"
            + "\n".join(str(c) for c in crashes),
            pytrace=False,
        )
    return result


def after_test(item: pytest.Item, watched: List[Tracked]) -> List[Crash]:
    """Heal the lab (the hosts must answer), then the crashes of ``watched``."""
    heal(item)
    return [c for t in watched for c in t.crashes()]


def heal(item: pytest.Item) -> None:
    """Remove the cuts a test left in ``rx_lab``, if it has it."""
    lab = (getattr(item, "funcargs", None) or {}).get("rx_lab")
    if lab is None:
        return
    from remoteexec.lab import Lab

    if isinstance(lab, Lab) and lab.is_up and lab.cuts:
        lab.heal()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Heal the lab's partitions a test left, before the fixtures' teardown."""
    heal(item)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:  # noqa: ARG001 - pytest passes it by name
    """A failed setup or call: save artifacts, add the report's section."""
    report = yield
    if report.when not in ("setup", "call") or not report.failed:
        return report
    state = item.config.stash.get(STATE, None)
    if state is None:
        return report
    tracked = used(item)
    if report.when == "setup":
        tracked += [t for t in state.failed_setups if t not in tracked]
        state.failed_setups = []
    if not tracked:
        return report
    from remoteexec.pytest.tracked import node_dir

    dest = os.path.join(state.artifacts, node_dir(item.nodeid))
    lines = []
    crashes = item.stash.get(CRASHES, []) if report.when == "call" else []
    if crashes:
        lines.append("crashes while the test ran:\n" + "\n".join(str(c) for c in crashes))
    for t in tracked:
        try:
            t.save(os.path.join(dest, t.fixture))
        except Exception as e:  # the evidence must not hide the failure
            lines.append("%s: artifacts incomplete: %s" % (t.fixture, e))
        summary = t.summary()
        if summary:
            lines.append(summary)
    lines.append("artifacts: %s" % dest)
    report.sections.append(("remoteexec", "\n".join(lines)))
    return report


def failed_setup(config: pytest.Config, tracked: Tracked) -> None:
    """Book a fixture whose start failed, for the setup report that follows."""
    state = config.stash.get(STATE, None)
    if state is not None:
        state.failed_setups.append(tracked)


__all__ = [
    "DEFAULT_ARTIFACTS",
    "LAB_PYTHON",
    "after_test",
    "failed_setup",
    "heal",
    "in_ci",
    "read_inventory",
    "rx_hosts",
    "rx_lab",
    "rx_master",
    "skip_or_fail",
    "track",
    "untrack",
    "used",
]
