"""Writes through a partition: no acknowledged write is lost, the replicas converge.

A replica set on hosts a, b and c, and a client on c that writes to the
leader on a. Host b (a replica) is cut off from everyone while the client
writes, then healed.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from remoteexec.lab import Lab
from remoteexec.pytest import stack_fixture
from remoteexec.stack import Stack

# Started before the module's first test, on the session's hosts; down after its last.
shop = stack_fixture("partition.toml")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll ``condition`` until it holds; fail, saying ``what``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


#: The state of the leader's replication link from the member with this uuid.
UPSTREAM = """
local uuid = ...
for _, peer in pairs(box.info.replication) do
    if peer.uuid == uuid then return peer.upstream and peer.upstream.status or 'none' end
end
"""


def acked(stack: Stack) -> int:
    """The highest id the client says the leader acknowledged (every id up to it is)."""
    found = re.findall(r"^acked (\d+)$", stack.logs("writer", lines=5), re.MULTILINE)
    return int(found[-1]) if found else 0


def test_acknowledged_writes_survive_a_partition(rx_lab: Lab, shop: Stack) -> None:
    storage = shop["storage"].service  # the ReplicaSet
    leader, cut = storage.members[0], storage.members[1]  # on hosts a and b
    wait_for("first writes", lambda: acked(shop) >= 20)

    rx_lab.partition(1)  # host b: cut from every host and from the master, silently
    wait_for("the leader to lose b", lambda: leader.eval(UPSTREAM, cut.instance_uuid) != "follow")
    before = acked(shop)
    wait_for("writes during the partition", lambda: acked(shop) >= before + 50)
    rx_lab.heal()

    written = acked(shop)  # every id up to here was acknowledged by the leader
    count = "return box.space.log.index.pk:count({%d}, {iterator = 'LE'})" % written
    for member in storage.members:
        wait_for(
            "%s to have all %d acknowledged rows" % (member.name, written),
            lambda member=member: member.eval(count) == written,
        )
    storage.wait_synced(timeout=20)  # and every replica's vclock caught up with the leader's
