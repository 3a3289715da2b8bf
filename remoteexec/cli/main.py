"""The ``remoteexec`` command line.

- ``remoteexec demo [--local] [FILE]``: the demo stack (see :mod:`remoteexec.cli.demo`).
- ``remoteexec lab up|down|status|partition|heal``: test hosts (see :mod:`remoteexec.lab`).
- ``remoteexec run [OPTIONS] TARGET [OPTIONS] -- COMMAND...``: run one command on a
  host and print its output; TARGET is ``local`` or ``[user@]host[:port]``.
  Options go anywhere before ``--``; everything after it is the command.
- ``remoteexec up | config | exec``: a stack file (see :mod:`remoteexec.cli.stack`).
- ``remoteexec status | logs | restart | down | ls``: detached stacks (``up -d``;
  see :mod:`remoteexec.cli.detached`).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Tuple

from remoteexec import arguments

RUN_USAGE = "remoteexec run [options] TARGET [options] -- COMMAND [ARG...]"


def _seconds(text: str) -> float:
    """argparse type for ``--timeout``: a bad value is a usage error (exit 2)."""
    try:
        return arguments.seconds("--timeout", float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run(args: argparse.Namespace) -> int:
    from remoteexec.master import Master

    with Master() as master:
        if args.target == "local":
            host = master.local()
        else:
            host = master.connect(
                args.target,
                identity_file=args.identity_file,
                known_hosts_file=args.known_hosts_file,
                python=args.python,
            )
        result = host.run(args.command, timeout=args.timeout)
    for stream, data in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        # text=True (the default) gives str; bytes only if that ever changes.
        stream.write(data if isinstance(data, str) else data.decode("utf-8", "replace"))
    return result.returncode


def _split_command(argv: List[str]) -> Tuple[List[str], Optional[List[str]]]:
    """``run``/``exec`` argv cut at the first ``--``: (what argparse parses, the
    command after it or None). argparse alone would let the command's
    positionals swallow the options after TARGET."""
    if argv[:1] not in (["run"], ["exec"]) or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: Optional[List[str]] = None) -> int:
    from . import detached as detached_cli
    from . import lab as lab_cli
    from . import stack as stack_cli

    parser = argparse.ArgumentParser(prog="remoteexec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="bring up the example stack, check every tier, tear it down")
    demo.add_argument("--local", action="store_true", help="local contexts, no lab")
    demo.add_argument(
        "file", nargs="?", help="a stack file shaped like examples/shop.toml (default: that one)"
    )

    lab = sub.add_parser("lab", help="namespaced sshd test hosts")
    lab_cli.add_arguments(lab)

    run = sub.add_parser("run", help="run one command on a host", usage=RUN_USAGE)
    run.add_argument("target", help="'local' or [user@]host[:port]")
    run.add_argument("command", nargs="*", default=[], help="the command, after --")
    run.add_argument("-i", "--identity-file")
    run.add_argument("--known-hosts-file")
    run.add_argument("--python", default="python3")
    run.add_argument("--timeout", type=_seconds, default=None, help="seconds (default: none)")
    stack_cli.add_arguments(sub)
    detached_cli.add_arguments(sub)

    options, after = _split_command(list(sys.argv[1:] if argv is None else argv))
    args, extras = parser.parse_known_args(options)
    if args.cmd == "exec" and after is not None:
        args.command = args.command + after
    if args.cmd != "run":
        if extras:
            parser.error("unrecognized arguments: %s" % " ".join(extras))
    else:
        if extras:
            run.error(
                "unrecognized arguments: %s (options go before --, the command after it)"
                % " ".join(extras)
            )
        if after is not None and args.command:
            run.error(
                "%s before -- is not an option (the command goes after --)" % " ".join(args.command)
            )
        args.command = after if after is not None else args.command
        if not args.command:
            run.error("no command given (put it after --)")
    try:
        if args.cmd == "demo":
            from . import demo as demo_mod

            return demo_mod.main(
                (["--local"] if args.local else []) + ([args.file] if args.file else [])
            )
        if args.cmd == "lab":
            return lab_cli.run(args)
        if args.cmd in stack_cli.COMMANDS:
            return stack_cli.run(args)
        if args.cmd in detached_cli.COMMANDS:
            return detached_cli.run(args)
        return _run(args)
    except Exception as e:  # one clear line, not a traceback
        from remoteexec.errors import RemoteExecError

        if isinstance(e, RemoteExecError):
            print("remoteexec: %s" % e, file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
