"""Run ``tarantool --version`` N times while the orphan reaper spins.

argv: N. The supervisor's reaper runs in a tight loop on another thread, as
a very fast heartbeat would run it; every version check must still succeed.
Runs in its own process, so the reaper only ever sees this process's
children. Prints one JSON line: calls, failures, first failure texts, seconds.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from remoteexec.target import procs, tarantool


def main():
    calls = int(sys.argv[1])
    stop = threading.Event()
    reaps = [0]

    def reaper():
        while not stop.is_set():
            procs.reap_orphans()
            reaps[0] += 1
            time.sleep(0.0001)

    thread = threading.Thread(target=reaper, daemon=True)
    thread.start()
    failures = []
    started = time.monotonic()
    try:
        for _ in range(calls):
            result = tarantool.tarantool_version()
            if not result["ok"]:
                failures.append(result["error"]["message"])
    finally:
        stop.set()
        thread.join(10)
    print(
        json.dumps(
            {
                "calls": calls,
                "failures": len(failures),
                "examples": failures[:3],
                "reaps": reaps[0],
                "seconds": round(time.monotonic() - started, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
