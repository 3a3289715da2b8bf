"""A master that runs a replica set on the lab, for the SIGKILL test: the test kills it.

argv: CONNECT_OPTIONS_JSON TARGETS_JSON PORT
Prints 'READY {json}' once the set is in full mesh, then sleeps (at most 5 min).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import remoteexec as rx
from remoteexec.tarantool import ReplicaSet


def main() -> None:
    options, targets, port = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    master = rx.Master(heartbeat_timeout=10)
    hosts = master.connect_all(targets, **options)
    rs = ReplicaSet("doomed", members=[(h, port) for h in hosts], timeout=20)
    rs.start()
    info = {
        "run_id": master.run_id,
        "pids": [m.pid for m in rs.members],
        "uris": [m.uri for m in rs.members],
    }
    print("READY " + json.dumps(info), flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main()
