"""A master inside ``with rx.Master()``, for the Ctrl-C test.

argv: CONNECT_OPTIONS_JSON TARGETS_JSON. Prints 'READY {json}', then waits
(at most 60 s) for SIGINT, which must unwind through Master.__exit__ while
the ssh clients, in their own process group, stay up for the cleanup calls.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import remoteexec as rx

options, targets = json.loads(sys.argv[1]), json.loads(sys.argv[2])
try:
    with rx.Master() as master:
        host = master.connect(targets[0], **options)
        # Kept in a variable: a dropped executor's process is killed.
        sleeper = rx.SimpleExecutor(["sleep", "60"], on=host).start()
        print("READY " + json.dumps({"run_id": master.run_id}), flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    print("CLOSED lost=%s" % (host.lost,), flush=True)
