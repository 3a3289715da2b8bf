"""The ``remoteexec`` command line.

- ``remoteexec demo [--local]``: the demo topology (see :mod:`remoteexec.demo`).
- ``remoteexec lab up|down|status|partition|heal``: test hosts (see :mod:`remoteexec.lab`).
- ``remoteexec run TARGET -- COMMAND...``: run one command on a host and print
  its output; TARGET is ``local`` or ``[user@]host[:port]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _run(args: argparse.Namespace) -> int:
    import remoteexec as rx

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("remoteexec run: no command given", file=sys.stderr)
        return 2
    with rx.Master() as master:
        if args.target == "local":
            host = master.local()
        else:
            host = master.connect(
                args.target,
                identity_file=args.identity_file,
                known_hosts_file=args.known_hosts_file,
                python=args.python,
            )
        result = host.run(command, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def main(argv: Optional[List[str]] = None) -> int:
    from .lab import _cli as lab_cli

    parser = argparse.ArgumentParser(prog="remoteexec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="bring up the demo topology, check it, tear it down")
    demo.add_argument("--local", action="store_true", help="local contexts, no lab")

    lab = sub.add_parser("lab", help="namespaced sshd test hosts")
    lab_cli.add_arguments(lab)

    run = sub.add_parser("run", help="run one command on a host")
    run.add_argument("target", help="'local' or [user@]host[:port]")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.add_argument("-i", "--identity-file")
    run.add_argument("--known-hosts-file")
    run.add_argument("--python", default="python3")
    run.add_argument("--timeout", type=float, default=None)

    args = parser.parse_args(argv)
    try:
        if args.cmd == "demo":
            from . import demo as demo_mod

            return demo_mod.main(["--local"] if args.local else [])
        if args.cmd == "lab":
            return lab_cli.run(args)
        return _run(args)
    except Exception as e:  # one clear line, not a traceback
        from .errors import RemoteExecError

        if isinstance(e, RemoteExecError):
            print("remoteexec: %s" % e, file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
