"""Command line for :mod:`remoteexec.lab` (``python -m remoteexec.lab ...``).

Reusable from another CLI: ``add_arguments(subparser)`` then ``run(args)``, or simply
``main(argv)``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional, Union

if TYPE_CHECKING:  # imported when a lab command runs: ~85 ms every other command skips
    from remoteexec.lab import Lab

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``up``/``down``/``status``/``partition``/``heal`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="lab_command", metavar="COMMAND")
    sub.required = True

    up = sub.add_parser("up", help="create a lab and leave it running")
    up.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    up.add_argument("--name", help="lab name (default: random)")
    up.add_argument("--subnet", help="IPv4 subnet, e.g. 10.9.8.0/24 (default: a free 10.X.Y.0/24)")
    up.add_argument("--user", default="root", help="login user in targets (default root)")
    up.add_argument("--base-dir", help="directory for keys/configs/logs")
    up.add_argument(
        "--shared-fs",
        action="store_true",
        help="hosts share this machine's /tmp, /var/tmp, /run and home (default: their own)",
    )
    up.add_argument("--json", action="store_true", help="print JSON")

    down = sub.add_parser("down", help="tear labs down")
    down.add_argument("names", nargs="*", metavar="NAME", help="labs to remove")
    down.add_argument("--stale", action="store_true", help="remove labs whose creator is gone")
    down.add_argument(
        "--all", action="store_true", help="remove every lab, even ones in use by live processes"
    )

    status = sub.add_parser("status", help="list labs on this machine")
    status.add_argument("--json", action="store_true", help="print JSON")

    part = sub.add_parser("partition", help="cut A from B (or from everyone if B is omitted)")
    part.add_argument("name")
    part.add_argument("a", help="host: index (0-based), address or name (h1)")
    part.add_argument("b", nargs="?", help="host, or 'master'; omitted: everyone")

    heal = sub.add_parser("heal", help="remove cuts (all, those of A, or A-B)")
    heal.add_argument("name")
    heal.add_argument("a", nargs="?")
    heal.add_argument("b", nargs="?")


def _ref(text: Optional[str]) -> Union[int, str, None]:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def _print_up(lab: Lab, as_json: bool) -> None:
    if as_json:
        print(json.dumps(lab.to_dict(), indent=2))
        return
    print(f"lab {lab.name} up: {len(lab.hosts)} hosts on {lab.subnet} (bridge {lab.bridge})")
    for h in lab.hosts:
        print(f"  {h.name}  {h.target:<22} netns {h.netns}  sshd pid {h.sshd_pid}")
    print(f"identity_file:    {lab.identity_file}")
    print(f"known_hosts_file: {lab.known_hosts_file}")
    print(f"ssh:  {shlex.join(lab.ssh_command(0))}")
    print(f"down: python -m remoteexec.lab down {lab.name}")


def _print_status(labs: List[Any]) -> None:
    if not labs:
        print("no labs")
        return
    for lab in labs:
        owner = "alive" if lab["owner_alive"] else "gone"
        flags = " stale" if lab["stale"] else ""
        flags += " detached" if lab["detached"] else ""
        print(
            f"{lab['name']}: {lab['status']} {lab['subnet']} owner pid {lab['owner_pid']} "
            f"({owner}){flags}"
        )
        for h in lab["hosts"]:
            state = "running" if h["sshd_running"] else "NOT running"
            print(f"  {h['name']}  {h['target']:<22} sshd {state}")
        if lab["cuts"]:
            print("  cuts: " + ", ".join("-".join(c) for c in lab["cuts"]))


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments (see :func:`add_arguments`); return the exit status."""
    from remoteexec.lab import Lab, LabError

    cmd = args.lab_command
    try:
        if cmd == "up":
            t0 = time.monotonic()
            lab = Lab(
                hosts=args.hosts,
                name=args.name,
                subnet=args.subnet,
                base_dir=args.base_dir,
                user=args.user,
                shared_fs=args.shared_fs,
            ).up()
            lab.detach()
            _print_up(lab, args.json)
            if not args.json:
                print(f"up in {time.monotonic() - t0:.2f} s")
            return 0
        if cmd == "down":
            if not (args.names or args.stale or args.all):
                print("down: give NAME..., --stale or --all", file=sys.stderr)
                return 2
            removed = []
            for name in args.names:
                Lab.attach(name).down()
                removed.append(name)
            if args.stale or args.all:
                removed += Lab.down_stale(all=args.all)
            print("removed: " + (" ".join(removed) if removed else "nothing"))
            return 0
        if cmd == "status":
            labs = Lab.status()
            if args.json:
                print(json.dumps(labs, indent=2))
            else:
                _print_status(labs)
            return 0
        if cmd == "partition":
            lab = Lab.attach(args.name)
            lab.partition(_ref(args.a), _ref(args.b))  # type: ignore[arg-type]
            print("cuts: " + ", ".join("-".join(c) for c in lab.cuts))
            return 0
        if cmd == "heal":
            lab = Lab.attach(args.name)
            lab.heal(_ref(args.a), _ref(args.b))
            print("cuts: " + (", ".join("-".join(c) for c in lab.cuts) or "none"))
            return 0
    except (LabError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None, prog: str = "python -m remoteexec.lab") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Multi-host lab on one machine: sshd in network namespaces."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)
