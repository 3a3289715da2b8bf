"""The supervisor's request handler (remoteexec.target.supervisor.Requests)
answers only its host's parent, the master: a request from any other context
gets mitogen's dead reply ("refused by policy") and never runs the method.

Two senders mitogen really routes to h1's handle: a context opened *through*
h1 (a child of h1's context, as a hop's context is), whose messages reach h1
on its own stream; and h2, a sibling, whose messages the master forwards to
h1. Neither is h1's parent, so has_parent_authority refuses both; the
master's own requests on the same handle still run."""

from __future__ import annotations

import os
from typing import Any, Iterator, Tuple

import pytest
from conftest import PY, connect_options
from helpers.request_probe import send_request

import remoteexec as rx
from remoteexec.fanout import run_all
from remoteexec.host import RunRequest

pytestmark = pytest.mark.lab

#: Bound on each probe's wait for a reply; a refusal comes in milliseconds.
REPLY_BOUND = 20.0


@pytest.fixture(scope="module")
def three(lab: Any) -> Iterator[Tuple[rx.Host, rx.Host, rx.Host]]:
    """h1, h2 (both children of the master) and a local context opened via h1
    (a child of h1's context, on h1)."""
    with rx.Master(heartbeat_timeout=5) as m:
        h1 = m.connect(lab.targets[0], **connect_options(lab))
        h2 = m.connect(lab.targets[1], **connect_options(lab))
        inner = m.connect("local://probe", via=h1, python=PY)
        yield h1, h2, inner


def _refused(sender: rx.Host, target: rx.Host, marker: str) -> None:
    """``sender`` asks ``target``'s supervisor to run ``touch marker``: a dead
    reply, refused by policy, and no marker."""
    kwargs = RunRequest(["touch", marker]).kwargs
    handle = target.info["request_handle"]
    outcome = sender.context.call(
        send_request, target.context.context_id, handle, "run", kwargs, REPLY_BOUND
    )
    assert outcome[0] == "dead" and "refused by policy" in outcome[1], outcome
    # The method would have run before any reply: its absence now is final.
    assert not os.path.exists(marker), "a refused request ran"


def test_a_child_of_the_hosts_context_is_refused(lab: Any, three: Any, tmp_path: Any) -> None:
    """A context on h1, opened through h1, may not call h1's supervisor."""
    h1, _, inner = three
    assert inner.info["pid"] != h1.info["pid"]
    marker = os.path.join(lab.hosts[0].workdir, "from-child-%s" % tmp_path.name)
    _refused(inner, h1, marker)


def test_a_sibling_routed_through_the_master_is_refused(
    lab: Any, three: Any, tmp_path: Any
) -> None:
    """h2's request, forwarded by the master to h1, is refused there."""
    h1, h2, _ = three
    marker = os.path.join(lab.hosts[0].workdir, "from-sibling-%s" % tmp_path.name)
    _refused(h2, h1, marker)


def test_the_masters_requests_still_run(lab: Any, three: Any, tmp_path: Any) -> None:
    """After the refusals, the master's own request on the same handle runs
    (run_all sends to the request handler, not the service pool)."""
    h1, _, inner = three
    marker = os.path.join(lab.hosts[0].workdir, "from-master-%s" % tmp_path.name)
    (result,) = run_all([h1], ["touch", marker])
    assert isinstance(result, rx.RunResult) and result.returncode == 0, result
    assert os.path.exists(marker)
    os.unlink(marker)
    # The context opened via h1 answers the master too: mitogen counts every
    # ancestor as a parent (its parent_ids hold the chain up to the master).
    (result,) = run_all([inner], ["true"])
    assert isinstance(result, rx.RunResult) and result.returncode == 0, result
