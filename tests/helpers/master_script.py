"""A master in its own process, for crash tests: the test kills it.

argv: MODE [CONNECT_OPTIONS_JSON TARGETS_JSON] [HEARTBEAT_TIMEOUT]
MODE local: executors on a local context; lab: on every lab target.
Prints 'READY {json}' once everything runs, then sleeps (at most 5 min).
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import remoteexec as rx
from remoteexec.lab import free_port

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proc.py")
PY = "/usr/bin/python3"


def main():
    mode = sys.argv[1]
    heartbeat = 10.0
    if mode == "lab":
        options, targets = json.loads(sys.argv[2]), json.loads(sys.argv[3])
        if len(sys.argv) > 4:
            heartbeat = float(sys.argv[4])
    master = rx.Master(heartbeat_timeout=heartbeat)
    hosts = master.connect_all(targets, **options) if mode == "lab" else [master.local()]
    started = []
    kept = []
    http_port, daemon_port = (18080, 18081) if mode == "lab" else (free_port(), free_port())
    for host in hosts:
        srv = rx.HTTPExecutor(
            [PY, HELPER, "http", "127.0.0.1", str(http_port)],
            url="http://127.0.0.1:%d/" % http_port,
            on=host,
            timeout=30,
        )
        daemon = rx.TCPExecutor(
            [PY, HELPER, "daemon", "127.0.0.1", str(daemon_port)],
            host="127.0.0.1",
            port=daemon_port,
            on=host,
            timeout=30,
        )
        tree = rx.OutputExecutor(
            [PY, HELPER, "children", "3"], banner="tree ready", on=host, timeout=30
        )
        for ex in (srv, daemon, tree):
            ex.start()
            started.append(ex.pid)
            # Held to the end: a dropped executor kills its process.
            kept.append(ex)
        # A long Host.run in flight as well: it must die with the run too.
        threading.Thread(target=host.run, args=(["sleep", "300"],), daemon=True).start()
    info = {
        "run_id": master.run_id,
        "master_pid": os.getpid(),
        "pids": started,
        "transport_pids": [h.transport_pid for h in hosts],
        "context_pids": [h.info["pid"] for h in hosts],
    }
    time.sleep(0.3)
    print("READY " + json.dumps(info), flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main()
