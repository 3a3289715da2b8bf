"""The demo: the example stack (examples/shop.toml) up, proven, torn down.

With root, iproute2 and sshd it builds a 3-host lab (network namespaces with
their own sshd), maps the file's hosts a, b, c onto the lab's hosts and
connects over real SSH; ``--local`` (or no lab possible) runs
examples/shop-local.toml instead: the same tiers on three local contexts,
each service on a port of its own. Then it:

1. loads the file with :meth:`remoteexec.Stack.from_file` and runs ``up()``,
   printing each service as it starts and becomes ready;
2. prints ``status()``;
3. proves each tier uses the one below: from another host it asks the api
   for ``/health`` (the api asks the router, the router the replica set's
   leader through net.box), writes a price through api → router → leader and
   reads it back on a replica of the replica set;
4. runs ``down()`` and checks no process of the run is left.

Exit 0 when all of that held; 1 with the reason (the failing service and its
host) otherwise. ``demo [--local] [FILE]`` runs FILE, a variant of the shop
example, instead of the shipped one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import remoteexec as rx
from remoteexec.target import procs

#: Interpreter for the hosts' contexts (lab hosts share this machine's /usr).
PY = "/usr/bin/python3" if shutil.which("/usr/bin/python3") else sys.executable
#: The example files, relative to the checkout's root (the package's parent).
LAB_FILE = os.path.join("examples", "shop.toml")
LOCAL_FILE = os.path.join("examples", "shop-local.toml")
#: What the demo writes through the chain and reads back on replicas.
ITEM, PRICE, USER = "kiwi", 7, "ann"
#: The probe run on a host other than the api's: each (method, url) of
#: argv[1] (JSON) asked in turn, printed as [[status, body], ...].
PROBE = """
import json, sys, urllib.error, urllib.request
out = []
for method, url in json.loads(sys.argv[1]):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            out.append([r.status, json.loads(r.read())])
    except urllib.error.HTTPError as e:
        out.append([e.code, json.loads(e.read() or b'{}')])
print(json.dumps(out))
"""


class DemoError(Exception):
    """Why the demo failed: printed as its last line, exit status 1."""


def _say(text: str) -> None:
    print(text, flush=True)


def examples_path(relative: str) -> str:
    """``relative`` under the checkout's root (the parent of the package).

    The example ships with the repository, not in the package: a missing
    file is a DemoError that says where it was looked for.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(rx.__file__)))
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
        raise DemoError(
            "the example %s is not at %s: the demo runs from a checkout of the "
            "repository (./scripts/setup.sh, then .venv/bin/python -m remoteexec demo)"
            % (relative, path)
        )
    return path


@contextlib.contextmanager
def _lab_or_local(use_lab: bool, directory: str) -> Iterator[Any]:
    """The lab (outlives the master, so the master closes first) or None.

    Lab hosts have their own /tmp: the stack file's ``directory`` (its
    services' code) is shared with them, as ``remoteexec up --lab`` does,
    so a checkout under /tmp works too."""
    if not use_lab:
        yield None
        return
    from remoteexec.lab import Lab

    with Lab(hosts=3, share=[directory]) as lab:
        _say("lab %s: %s" % (lab.name, ", ".join(lab.targets)))
        yield lab


def _hosts(master: rx.Master, lab: Any, names: List[str]) -> Dict[str, rx.Host]:
    """The file's hosts: file host i on lab host i mod 3, or local contexts."""
    started = time.monotonic()
    if lab is None:
        hosts = {n: master.local(name=n, python=PY) for n in names}
    else:
        # A lab host is named after the first file host mapped onto it.
        count = min(len(names), len(lab.targets))
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            opened = list(
                pool.map(
                    lambda i: master.connect(
                        lab.targets[i],
                        name=names[i],
                        identity_file=lab.identity_file,
                        known_hosts_file=lab.known_hosts_file,
                        python=PY,
                    ),
                    range(count),
                )
            )
        hosts = {n: opened[i % count] for i, n in enumerate(names)}
    where = "local contexts" if lab is None else ", ".join(lab.targets)
    _say(
        "hosts %s (%s) open in %.0f ms"
        % (", ".join(hosts), where, (time.monotonic() - started) * 1000)
    )
    return hosts


def _address(lab: Any, host: rx.Host, hosts: Dict[str, rx.Host]) -> str:
    """The address other hosts reach ``host`` at."""
    if lab is None:
        return "127.0.0.1"
    return str(lab.hosts[list(hosts.values()).index(host) % len(lab.hosts)].address)


def _progress(event: rx.StackEvent) -> None:
    if event.kind == "starting":
        _say("  starting %-8s on %s" % (event.service, event.host))
    elif event.kind == "ready":
        _say(
            "  ready    %-8s on %s in %.0f ms"
            % (event.service, event.host, (event.seconds or 0) * 1000)
        )
    elif event.kind in ("failed", "exited"):
        _say("  %-8s %-8s on %s: %s" % (event.kind, event.service, event.host, event.message or ""))


def _status(stack: rx.Stack) -> None:
    _say("status:")
    for row in stack.status():
        endpoints = ", ".join(
            "%s=%s" % (k, v) for k, v in sorted(row["endpoints"].items()) if "." not in k and v
        )
        _say(
            "  %-8s %-8s %-12s pids %-18s %s"
            % (
                row["service"],
                row["state"],
                row["host"],
                ",".join(str(p) for p in row["pids"]),
                endpoints,
            )
        )


def _ask(client: rx.Host, requests: List[Tuple[str, str]]) -> List[Tuple[int, Any]]:
    """Each (method, url) asked from ``client``, printed; [(status, body), ...]."""
    result = client.run([PY, "-c", PROBE, json.dumps(requests)], timeout=60)
    if result.returncode != 0:
        raise DemoError("the probe on %s failed: %s" % (client.name, result.stderr.strip()))
    answers = [(int(code), body) for code, body in json.loads(result.stdout)]
    for (method, url), (code, body) in zip(requests, answers):
        _say("  %-4s %-40s -> %d %s" % (method, url, code, json.dumps(body)))
    return answers


def _read_back(stack: rx.Stack, name: str, lua: str, key: str, want: List[Any]) -> None:
    """``lua`` on the last replica of replica set ``name`` once it caught up."""
    replica_set = stack[name].service
    replica_set.wait_synced(timeout=10)
    replica = replica_set.replicas[-1]
    row, read_only = replica.eval(lua + ", box.info.ro", key)
    _say("  on the %s replica %s (read-only %s): %s" % (name, replica.uri, read_only, row))
    if list(row or []) != want or read_only is not True:
        raise DemoError("the write did not reach the %s replica %s: %r" % (name, replica.uri, row))


def _prove(stack: rx.Stack, lab: Any, hosts: Dict[str, rx.Host]) -> None:
    """The chain from another host: every api's /health (api → router →
    storage leader), then writes through the last api read back on replicas
    of both replica sets. DemoError if any link fails."""
    handle = stack["api"]
    apis = [m.service for m in handle.members] or [handle.service]
    bases = ["http://%s:%d" % (_address(lab, a.on, hosts), int(a.port)) for a in apis]
    client = next((h for h in hosts.values() if h is not apis[-1].on), apis[-1].on)
    last = bases[-1]
    _say("from %s to the api%s:" % (client.name, "s" if len(apis) > 1 else ""))
    answers = _ask(
        client,
        [("GET", base + "/health") for base in bases]
        + [
            ("PUT", "%s/price/%s/%d" % (last, ITEM, PRICE)),
            ("GET", "%s/price/%s" % (last, ITEM)),
            ("PUT", "%s/cart/%s/%s" % (last, USER, ITEM)),
            ("PUT", "%s/cart/%s/apple" % (last, USER)),
        ],
    )
    health, writes = answers[: len(bases)], answers[len(bases) :]
    for base, (code, body) in zip(bases, health):
        if code != 200 or body.get("price") != 3:
            raise DemoError("%s/health (api -> router -> storage) failed: %s" % (base, body))
    got = [(code, body.get("price", body.get("total"))) for code, body in writes]
    want = [(200, PRICE), (200, PRICE), (200, PRICE), (200, PRICE + 3)]
    if got != want:
        raise DemoError("writes through api -> router -> replica sets: %s, not %s" % (got, want))
    _read_back(stack, "storage", "return box.space.goods:get(...)", ITEM, [ITEM, PRICE])
    _read_back(stack, "sessions", "return box.space.carts:get(...)", USER, [USER, PRICE + 3])


def _pids(stack: rx.Stack) -> List[int]:
    return [p for row in stack.status() for p in row["pids"]]


def _up_prove_down(path: str, master: rx.Master, lab: Any, names: List[str]) -> List[int]:
    """Runs the stack of ``path``; the pids it had, for the check after."""
    hosts = _hosts(master, lab, names)
    # What a test's process oracle needs to find every process of this run.
    contexts = sorted({int(h.info["pid"]) for h in hosts.values()})
    _say("run %s, contexts %s" % (master.run_id, ",".join(map(str, contexts))))
    stack = rx.Stack.from_file(path, master=master, hosts=hosts)
    stack.subscribe(_progress)
    started = time.monotonic()
    pids: List[int] = []
    try:
        stack.up()
        _say("up in %.0f ms" % ((time.monotonic() - started) * 1000))
        pids = _pids(stack)
        _status(stack)
        _prove(stack, lab, hosts)
    finally:
        started = time.monotonic()
        stack.down()
        _say("down in %.0f ms" % ((time.monotonic() - started) * 1000))
    return pids


def run(use_lab: bool, path: Optional[str] = None) -> int:
    """Run the demo on a lab (``use_lab``) or local contexts; the exit status."""
    from remoteexec.stack import file as stackfile

    began = time.monotonic()
    failure: Optional[BaseException] = None
    left: List[int] = []
    try:
        path = path or examples_path(LAB_FILE if use_lab else LOCAL_FILE)
        names = list(stackfile.read(path).hosts)
        _say("stack file %s (hosts %s)" % (path, ", ".join(names)))
        with _lab_or_local(use_lab, os.path.dirname(os.path.abspath(path))) as lab:
            pids: List[int] = []
            with rx.Master() as master:
                try:
                    pids += _up_prove_down(path, master, lab, names)
                except (DemoError, rx.RemoteExecError) as e:
                    failure = e
            # Lab hosts share this machine's pid space, so this sees every host.
            marked = procs.pids_with_marker("REMOTEEXEC_RUN", run_prefix=master.run_id)
            left = sorted(set(marked) | {p for p in pids if procs.is_alive(p)})
    except (DemoError, rx.RemoteExecError, ValueError) as e:
        failure = e
    _say("torn down: %d processes of this run left %s" % (len(left), left or ""))
    _say("demo finished in %.2f s" % (time.monotonic() - began))
    if failure is not None:
        _say("demo failed: %s" % failure)
        return 1
    return 1 if left else 0


def main(argv: Optional[List[str]] = None) -> int:
    """``demo [--local] [FILE]``; ``--local`` forces local contexts even as root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    use_lab = "--local" not in argv
    files = [a for a in argv if a != "--local"]
    if len(files) > 1 or any(f.startswith("-") for f in files):
        _say("usage: remoteexec demo [--local] [FILE]")
        return 2
    if use_lab:
        from remoteexec.lab import Lab

        ok, why = Lab.available()
        if not ok:
            _say("cannot build a lab here (%s): running on local contexts instead" % why)
            use_lab = False
    return run(use_lab, files[0] if files else None)


if __name__ == "__main__":
    sys.exit(main())
