"""A master with an open lane, in its own process, for the SIGKILL test.

argv: CONNECT_OPTIONS_JSON TARGET. Opens the lane, starts a long Host.run
on it, prints 'READY {json}' with the pids of the lane's parts, then sleeps.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import remoteexec as rx


def main():
    options, target = json.loads(sys.argv[1]), sys.argv[2]
    master = rx.Master(heartbeat_timeout=10.0)
    host = master.connect(target, **options)
    assert host.open_lane()
    lane = host.lane.current
    threading.Thread(target=host.run, args=(["sleep", "300"],), daemon=True).start()
    deadline = time.monotonic() + 30
    while not lane.busy.locked():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    info = {
        "run_id": master.run_id,
        "context": host.info["pid"],
        "ssh": host.transport_pid,
        "mux": lane.proc.pid,
        "relay": lane.relay_pid,
        "control_path": host.connector.control_path,
    }
    print("READY " + json.dumps(info), flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main()
