"""The demo topology: services on several hosts, health-checked, torn down.

With root, iproute2 and sshd it builds a 3-host lab (network namespaces with
their own sshd) and connects over real SSH; otherwise it runs the same on
local contexts. It starts an HTTP server on the first host, a TCP service
on the second, checks both from the third host over the network, then (if
a tarantool binary is present) a 3-member Tarantool replica set across all
three, and tears everything down. Prints what it did and how long it took.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from typing import Any, Callable, Iterator, List, Tuple

import remoteexec as rx
from remoteexec.target import procs

#: Interpreter for the demo's services and the hosts' contexts.
PY = "/usr/bin/python3" if shutil.which("/usr/bin/python3") else sys.executable


def _say(text: str) -> None:
    print(text, flush=True)


def _timed(label: str, fn: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = fn()
    _say("  %-44s %6.0f ms" % (label, (time.monotonic() - started) * 1000))
    return result


@contextlib.contextmanager
def _lab_or_local(use_lab: bool) -> Iterator[Any]:
    """The lab (outlives the master, so the master closes first) or None."""
    if not use_lab:
        yield None
        return
    from remoteexec.lab import Lab

    with Lab(hosts=3) as lab:
        _say("lab %s: %s" % (lab.name, ", ".join(lab.targets)))
        yield lab


def _hosts(master: rx.Master, lab: Any) -> Tuple[List[rx.Host], List[str]]:
    """3 hosts and the address each one's services listen on."""
    if lab is None:
        return [master.local(name="local-%d" % i) for i in range(3)], ["127.0.0.1"] * 3
    hosts = _timed(
        "connect_all (3 hosts over ssh)",
        lambda: master.connect_all(
            lab.targets,
            identity_file=lab.identity_file,
            known_hosts_file=lab.known_hosts_file,
            python=PY,
        ),
    )
    return hosts, [h.address for h in lab.hosts]


def _services(hosts: List[rx.Host], addrs: List[str], started: List[int]) -> None:
    web = rx.HTTPExecutor(
        [PY, "-m", "http.server", "8000", "--bind", addrs[0]],
        url="http://%s:8000/" % addrs[0],
        on=hosts[0],
        timeout=20,
    )
    echo_code = (
        "import socketserver as s\n"
        "class H(s.StreamRequestHandler):\n"
        "    def handle(self): self.wfile.write(self.rfile.readline())\n"
        "s.TCPServer.allow_reuse_address = True\n"
        "s.TCPServer((%r, 9000), H).serve_forever()\n" % addrs[1]
    )
    echo = rx.TCPExecutor([PY, "-c", echo_code], host=addrs[1], port=9000, on=hosts[1], timeout=20)
    _timed("HTTP server on %s ready" % hosts[0].name, web.start)
    _timed("TCP echo service on %s ready" % hosts[1].name, echo.start)
    started += [web.pid, echo.pid]
    probe = (
        "import socket, urllib.request\n"
        "print(urllib.request.urlopen('http://%s:8000/', timeout=5).status)\n"
        "c = socket.create_connection((%r, 9000), 5); c.sendall(b'ping\\n')\n"
        "print(c.recv(10).decode().strip())\n" % (addrs[0], addrs[1])
    )
    r = _timed(
        "checked both from %s" % hosts[2].name,
        lambda: hosts[2].run([PY, "-c", probe], check=True, timeout=20),
    )
    _say("    -> http status %s, echo %r" % tuple(r.stdout.split()))
    _timed("stop both", lambda: (web.stop(), echo.stop()))


def _replica_set(hosts: List[rx.Host], addrs: List[str], started: List[int]) -> None:
    if not shutil.which("tarantool"):
        _say("  (no tarantool binary: replica set skipped)")
        return
    try:
        from remoteexec.tarantool import ReplicaSet
    except ImportError:
        return
    ports = [3301, 3302, 3303] if len(set(addrs)) == 1 else [3301] * 3
    rs = ReplicaSet("demo", members=list(zip(hosts, ports)), replication_timeout=0.1)
    phases = _timed("replica set of 3 started, full mesh", rs.start)
    started += [m.pid for m in rs.members if m.pid is not None]
    _say("    -> phases: %s" % ", ".join("%s %.0f ms" % (k, v * 1000) for k, v in phases.items()))
    rs.leader.eval(
        "box.schema.space.create('demo', {if_not_exists = true})"
        ":create_index('pk', {if_not_exists = true})"
    )
    rs.leader.eval("box.space.demo:replace{1, 'hello from the leader'}")
    _timed("replicas synced", lambda: rs.wait_synced(timeout=5))
    row = rs.replicas[-1].eval("return box.space.demo:get(1)")
    _say("    -> read on a replica: %r" % (row,))
    _timed("replica set stopped", rs.stop)


def run(use_lab: bool) -> int:
    started = time.monotonic()
    with _lab_or_local(use_lab) as lab:
        with rx.Master() as master:
            hosts, addrs = _hosts(master, lab)
            pids: List[int] = []
            _services(hosts, addrs, pids)
            _replica_set(hosts, addrs, pids)
        # Lab hosts share this machine's pid space, so this sees every host.
        marked = procs.pids_with_marker("REMOTEEXEC_RUN", run_prefix=master.run_id)
        left = sorted(set(marked) | {p for p in pids if procs.is_alive(p)})
    _say("  torn down: %d processes of this run left %s" % (len(left), left or ""))
    _say("demo finished in %.2f s" % (time.monotonic() - started))
    return 1 if left else 0


def main(argv: List[str] | None = None) -> int:
    """Run the demo; ``--local`` forces local contexts even as root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    use_lab = "--local" not in argv
    if use_lab:
        from remoteexec.lab import Lab

        ok, why = Lab.available()
        if not ok:
            _say("cannot build a lab here (%s): running on local contexts instead" % why)
            use_lab = False
    return run(use_lab)


if __name__ == "__main__":
    sys.exit(main())
