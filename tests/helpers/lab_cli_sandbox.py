"""Drive ``python -m remoteexec lab ...`` inside a sandbox; print one JSON report.

Run only by ``test_lab.py::test_cli_lab_commands_and_down_all_in_a_sandbox``,
inside ``unshare --mount --net --pid`` with private /run, /tmp, /etc/netns and
/sys, after a guard checked that no lab of the machine is visible: ``down
--all`` here can only see (and remove) the labs made here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "remoteexec", "lab", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def reachable(address: str) -> bool:
    """Whether the host's sshd answers a TCP connect within 1 s."""
    try:
        socket.create_connection((address, 22), timeout=1).close()
        return True
    except OSError:
        return False


def names() -> list:
    r = cli("status", "--json")
    return sorted(lab["name"] for lab in json.loads(r.stdout or "[]"))


def main() -> None:
    report: dict = {"steps": {}}

    def step(key: str, r: subprocess.CompletedProcess) -> str:
        report["steps"][key] = {
            "rc": r.returncode,
            "out": r.stdout[-2000:],
            "err": r.stderr[-2000:],
        }
        return r.stdout

    stale = json.loads(step("up", cli("up", "--hosts", "2", "--json")))
    report["stale"] = stale["name"]
    # A lab whose creating process lives on: in use, so --stale keeps it.
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from remoteexec.lab import Lab\n"
            "with Lab(hosts=1) as lab:\n"
            "    print(lab.name, flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    report["in_use"] = owner.stdout.readline().strip()
    report["status"] = json.loads(step("status", cli("status", "--json")) or "[]")
    address = stale["hosts"][0]["address"]
    report["reach_before"] = reachable(address)
    step("partition", cli("partition", stale["name"], "0", "master"))
    report["reach_cut"] = reachable(address)
    step("heal", cli("heal", stale["name"]))
    report["reach_healed"] = reachable(address)
    step("down_stale", cli("down", "--stale"))
    report["after_stale"] = names()
    report["stale2"] = json.loads(step("up2", cli("up", "--hosts", "1", "--json")))["name"]
    report["before_all"] = names()
    step("down_all", cli("down", "--all"))
    report["after_all"] = names()
    report["netns"] = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    report["links"] = sorted(os.listdir("/sys/class/net"))
    report["base_dirs"] = (
        sorted(os.listdir("/tmp/remoteexec-lab")) if os.path.isdir("/tmp/remoteexec-lab") else []
    )
    owner.stdin.close()
    owner.wait(60)
    report["owner_rc"] = owner.returncode
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not os.path.isdir("/proc/1"):
        time.sleep(0.1)
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
