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

import mitogen.core
import pytest
from conftest import PY, connect_options
from helpers.request_probe import send_dead, send_heartbeat, send_request, thread_names

import remoteexec as rx
from remoteexec.fanout import run_all
from remoteexec.host import RunRequest

pytestmark = pytest.mark.lab

#: Bound on each probe's wait for a reply; a refusal comes in milliseconds.
REPLY_BOUND = 20.0
#: The handles a supervisor serves the master on (its install reply's keys):
#: remoteexec.target.supervisor.Requests and remoteexec.target.quick.
HANDLES = ("request_handle", "quick_handle")


@pytest.fixture(scope="module")
def three(lab: Any) -> Iterator[Tuple[rx.Host, rx.Host, rx.Host]]:
    """h1, h2 (both children of the master) and a local context opened via h1
    (a child of h1's context, on h1)."""
    with rx.Master(heartbeat_timeout=5) as m:
        h1 = m.connect(lab.targets[0], **connect_options(lab))
        h2 = m.connect(lab.targets[1], **connect_options(lab))
        inner = m.connect("local://probe", via=h1, python=PY)
        yield h1, h2, inner


def _refused(sender: rx.Host, target: rx.Host, handle: str, marker: str) -> None:
    """``sender`` asks ``target``'s ``handle`` to run ``touch marker``: a dead
    reply, refused by policy, and no marker."""
    if handle == "request_handle":  # Requests: (method, kwargs)
        body: Tuple[Any, ...] = ("run", RunRequest(["touch", marker]).kwargs)
    else:  # the quick handler: (kind, name, args, kwargs); would answer "not quick"
        body = ("call", "subprocess:check_call", [["touch", marker]], {})
    outcome = sender.context.call(
        send_request, target.context.context_id, target.info[handle], body, REPLY_BOUND
    )
    assert outcome[0] == "dead" and "refused by policy" in outcome[1], outcome
    # The method would have run before any reply: its absence now is final.
    assert not os.path.exists(marker), "a refused request ran"


@pytest.mark.parametrize("handle", HANDLES)
def test_a_child_of_the_hosts_context_is_refused(
    lab: Any, three: Any, tmp_path: Any, handle: str
) -> None:
    """A context on h1, opened through h1, may not call h1's supervisor."""
    h1, _, inner = three
    assert inner.info["pid"] != h1.info["pid"]
    marker = os.path.join(lab.hosts[0].workdir, "from-child-%s" % tmp_path.name)
    _refused(inner, h1, handle, marker)


@pytest.mark.parametrize("handle", HANDLES)
def test_a_sibling_routed_through_the_master_is_refused(
    lab: Any, three: Any, tmp_path: Any, handle: str
) -> None:
    """h2's request, forwarded by the master to h1, is refused there."""
    h1, h2, _ = three
    marker = os.path.join(lab.hosts[0].workdir, "from-sibling-%s" % tmp_path.name)
    _refused(h2, h1, handle, marker)


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


def test_the_heartbeat_watchdog_heeds_only_the_master(three: Any) -> None:
    """The watchdog (remoteexec.target.runstate) kills the run when the
    master's heartbeats stop. A child's heartbeat must not keep it alive, and
    a child's dead message (what a closing channel sends) must not end it:
    both refused, and the master's heartbeat still answered."""
    h1, _, inner = three
    handle = h1.info["heartbeat_handle"]
    assert "remoteexec-watchdog" in h1.call(thread_names)
    to_h1 = (h1.context.context_id, handle)
    inner.context.call(send_dead, *to_h1)
    # Sent after the dead message on the same stream, so answered after it:
    outcome = inner.context.call(send_heartbeat, *to_h1, REPLY_BOUND)
    assert outcome[0] == "dead" and "refused by policy" in outcome[1], outcome
    beat = mitogen.core.Message.pickled(None, handle=handle)
    reply = h1.context.send_async(beat).get(timeout=REPLY_BOUND).unpickle()
    assert isinstance(reply, float), reply
    assert "remoteexec-watchdog" in h1.call(thread_names)
