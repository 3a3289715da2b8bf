"""Detached stacks on the command line: ``up -d``, ``status``, ``logs``, ``restart``,
``down``, ``ls``.

- ``up -d FILE [-p NAME] [--host-state-dir DIR]`` starts the stack's
  services detached (they outlive this process) as project NAME (default:
  the file's stack name); run again, it starts only what does not run.
- ``status [-p NAME] [--json]``: per service and host: running (readiness
  re-checked, uptime), exited (its exit code) or lost, with the log tail;
  exit 1 unless every service runs (a job: exited 0).
- ``logs [SERVICE] [-f] [-n N] [-p NAME]``: the last N lines of each log,
  prefixed ``service@host |``; ``-f`` follows every host until Ctrl-C.
- ``restart SERVICE [-p NAME]``: stop it and start it again from the file.
- ``down [-p NAME] [--force] [--timeout S]``: stop everything in reverse
  order and remove the state; idempotent. Unreachable hosts are reported
  (exit 1); ``--force`` forgets them.
- ``ls [--json]``: the projects known on this machine and their hosts.

Without ``-p``, the one project known here is meant (a usage error if
there are several). State lives under ``$XDG_STATE_HOME/remoteexec``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from remoteexec.stack import Stack, StackEvent
    from remoteexec.stack import file as stackfile
    from remoteexec.stack import project as projects

__all__ = ["COMMANDS", "add_arguments", "run", "up"]

#: The subcommands this module adds (``up -d`` is ``up``'s, see :func:`up`).
COMMANDS = ("status", "logs", "restart", "down", "ls")
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


def add_arguments(subparsers: Any) -> None:
    """Add ``status``, ``logs``, ``restart``, ``down`` and ``ls``."""
    status = subparsers.add_parser(
        "status", help="a detached project's services: running, exited or lost"
    )
    _project_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("-n", "--lines", type=int, default=10, help="log tail lines (default 10)")

    logs = subparsers.add_parser("logs", help="a detached project's logs (-f: follow them)")
    logs.add_argument("service", nargs="?", metavar="SERVICE", help="one service (default: all)")
    _project_option(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="follow until Ctrl-C")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines per log (default 50)")

    restart = subparsers.add_parser("restart", help="restart a service of a detached project")
    restart.add_argument("service", metavar="SERVICE")
    _project_option(restart)

    down = subparsers.add_parser(
        "down", help="stop a detached project (reverse order) and remove its state"
    )
    _project_option(down)
    down.add_argument("--force", action="store_true", help="forget hosts that cannot be reached")
    down.add_argument(
        "--timeout", type=float, default=None, help="seconds per service stop (default: 10)"
    )

    ls = subparsers.add_parser("ls", help="the detached projects known on this machine")
    ls.add_argument("--json", action="store_true", help="print JSON")


def _project_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--project", metavar="NAME", help="the project (default: the only one)"
    )


def _error(text: str) -> None:
    print("remoteexec: %s" % text, file=sys.stderr, flush=True)


def _name(args: argparse.Namespace) -> Optional[str]:
    """The project meant: -p, or the only one known; None (said why) if unclear."""
    from remoteexec.stack import project as projects

    if args.project:
        return str(args.project)
    known = projects.names()
    if len(known) == 1:
        return known[0]
    if not known:
        _error("no detached projects on this machine")
    else:
        _error("several projects (%s): name one with -p" % ", ".join(known))
    return None


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``status``/``logs``/``restart``/``down``/``ls``."""
    from remoteexec.errors import RemoteExecError
    from remoteexec.stack import project as projects

    if args.cmd == "ls":
        return _ls(bool(args.json))
    name = _name(args)
    if name is None:
        return OK if args.cmd == "down" else USAGE
    if args.cmd == "down" and name not in projects.names():
        print("project %s: nothing to bring down" % name)
        return OK
    try:
        projects.check_name(name)
        with projects.attach(name) as detached:
            if args.cmd == "status":
                return _status(detached, args)
            if args.cmd == "logs":
                return _logs(detached, args)
            if args.cmd == "restart":
                timings = detached.restart(args.service)
                print("restarted: %s" % _timings(timings))
                return OK
            return _down(detached, args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except ValueError as e:
        _error(str(e))
        return USAGE
    except RemoteExecError as e:
        _error(str(e))
        return FAILED


def _timings(timings: Dict[str, float]) -> str:
    return ", ".join("%s %.2fs" % t for t in timings.items()) or "nothing to start"


def _ls(as_json: bool) -> int:
    from remoteexec.stack import project as projects

    rows: List[Dict[str, Any]] = []
    for name in projects.names():
        try:
            state = projects.load(name)
        except Exception as e:
            rows.append({"project": name, "error": str(e)})
            continue
        rows.append(
            {
                "project": name,
                "file": state.get("file"),
                "hosts": {h: v.get("target") for h, v in state.get("hosts", {}).items()},
                "services": list(state.get("services", {})),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return OK
    for row in rows:
        hosts = ", ".join("%s=%s" % h for h in row.get("hosts", {}).items())
        print("%-20s %s  hosts: %s" % (row["project"], row.get("file") or "-", hosts))
    return OK


def _uptime(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return (
        "%dd%02dh" % (s // 86400, s % 86400 // 3600)
        if s >= 86400
        else time.strftime("%H:%M:%S", time.gmtime(s))
    )


def _status(detached: projects.DetachedStack, args: argparse.Namespace) -> int:
    rows = detached.status(lines=max(0, args.lines))
    well = all(
        r.get("state") == "running" or (r.get("state") == "exited" and r.get("exit_code") == 0)
        for r in rows
    )
    if args.json:
        print(json.dumps({"project": detached.name, "services": rows}, indent=2, default=str))
        return OK if well else FAILED
    print(
        "%-14s %-12s %-8s %-12s %-24s %s"
        % ("SERVICE", "HOST", "PID", "STATE", "READINESS", "UPTIME")
    )
    for r in rows:
        state = r.get("state")
        if state == "exited":
            state = "exited(%s)" % r.get("exit_code")
        print(
            "%-14s %-12s %-8s %-12s %-24s %s"
            % (
                r["service"],
                r["host"],
                r.get("pid") or "-",
                state,
                r.get("readiness") or "-",
                _uptime(r.get("uptime")),
            )
        )
        if r.get("message"):
            print("    %s" % r["message"])
        for line in (r.get("output_tail") or "").splitlines():
            print("    | %s" % line)
    return OK if well else FAILED


def _logs(detached: projects.DetachedStack, args: argparse.Namespace) -> int:
    lock = threading.Lock()

    def line(service: str, host: str, text: str) -> None:
        with lock:
            print("%s@%s | %s" % (service, host, text), flush=True)

    if not args.follow:
        for service, host, text in detached.logs(args.service, max(0, args.lines)):
            for one in text.splitlines():
                line(service, host, one)
        return OK
    try:
        detached.follow(line, service=args.service, lines=max(0, args.lines))
    except KeyboardInterrupt:
        return OK
    return OK


def _down(detached: projects.DetachedStack, args: argparse.Namespace) -> int:
    from remoteexec.stack import project as projects

    t0 = time.monotonic()
    report = detached.down(
        force=bool(args.force),
        timeout=projects.STOP_TIMEOUT if args.timeout is None else float(args.timeout),
    )
    for what in ("escalated", "not_ours"):
        if report[what]:
            print("%s: %s" % (what.replace("_", " "), ", ".join(report[what])))
    for host, why in report["unreachable"].items():
        print("forgotten (unreachable): %s: %s" % (host, why))
    print(
        "project %s down in %.2f s: stopped %s"
        % (detached.name, time.monotonic() - t0, ", ".join(report["stopped"]) or "nothing")
    )
    return OK


def up(topology: stackfile.Topology, args: argparse.Namespace) -> int:
    """``up -d``: start the stack detached, print each service as it is ready."""
    import remoteexec as rx
    from remoteexec.errors import RemoteExecError
    from remoteexec.stack import file as stackfile
    from remoteexec.stack import project as projects

    if getattr(args, "lab", None):
        _error("up -d cannot use --lab: the lab would go with this process")
        return USAGE
    name = args.project or topology.name
    try:
        projects.check_name(name)
    except ValueError as e:
        _error(str(e))
        return USAGE
    as_json = bool(args.json)
    t0 = time.monotonic()

    def on_event(event: StackEvent) -> None:
        if as_json:
            print(json.dumps({"type": "event", **event.as_dict()}, default=str), flush=True)
        elif event.kind in ("ready", "failed", "exited"):
            took = "" if event.seconds is None else " %.2fs" % event.seconds
            print("%s@%s %s%s" % (event.service, event.host, event.kind, took), flush=True)

    try:
        with rx.Master() as master:
            hosts = stackfile.connect(topology, master)
            stack: Stack = stackfile.build(topology, hosts)
            stack.source_file = topology.path
            stack.validate()
            stack.subscribe(on_event)
            timings = stack.up(detach=True, project=name, host_state_dir=args.host_state_dir)
    except KeyboardInterrupt:
        return INTERRUPTED
    except (ValueError, TypeError) as e:
        _error("%s: %s" % (topology.path, e))
        return USAGE
    except RemoteExecError as e:
        _error(str(e))
        return FAILED
    took = time.monotonic() - t0
    if as_json:
        print(json.dumps({"type": "result", "result": "up", "project": name, "timings": timings}))
    else:
        print("project %s up (detached) in %.2f s: started %s" % (name, took, _timings(timings)))
    return OK
