"""A script that never closes its masters: interpreter exit must.

argv: GO_FILE. Starts, on local contexts, a service through an explicit
Master and one through the default (``on=None``) master, a Host.run in
flight, prints 'READY {json}', waits (bounded) for GO_FILE to exist, then
returns from main without closing anything.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import remoteexec as rx
from remoteexec.master import default_master

KEPT = []  # executors referenced until the very end, as a careless script does


def main():
    go = sys.argv[1]
    master = rx.Master()
    host = master.local()
    KEPT.append(rx.SimpleExecutor(["sleep", "300"], on=host).start())
    KEPT.append(rx.SimpleExecutor(["sleep", "300"]).start())  # the default master
    threading.Thread(target=host.run, args=(["sleep", "300"],), daemon=True).start()
    default = default_master()
    hosts = master.hosts + default.hosts
    info = {
        "run_ids": [master.run_id, default.run_id],
        "context_pids": [h.info["pid"] for h in hosts]
        + [h.info["guard_pid"] for h in hosts if h.info.get("guard_pid")],
    }
    print("READY " + json.dumps(info), flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("LEAVING", flush=True)


if __name__ == "__main__":
    main()
