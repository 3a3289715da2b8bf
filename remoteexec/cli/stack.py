"""``remoteexec up | config | exec``: a stack file from the command line.

- ``up FILE [--lab N] [--keep-going] [--json]`` starts the stack in the
  foreground, as ``docker compose up`` does: progress per service while it
  starts (a live table on a terminal, plain lines otherwise), then the
  services' logs, each line prefixed ``service@host |``, until Ctrl-C; then
  everything is brought down. A service that is not a job and exits for
  good brings the rest down and exits 1, unless ``--keep-going``.
- ``config FILE [--json]`` validates the file and prints the resolved
  topology with the start order in waves.
- ``exec FILE HOSTS -- CMD`` runs CMD on the named hosts (comma-separated,
  or ``all``) in parallel and prints each one's exit code and output: over
  plain SSH (:mod:`remoteexec.fanout`) when every host allows it, else (or
  with ``--context``) through a context on each host.

``--lab N`` maps the file's hosts onto a fresh lab of N hosts (host i of
the file on lab host i mod N), so a file can be tried on one machine; it
needs root.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, TextIO, Tuple

from remoteexec.stack import file as stackfile

if TYPE_CHECKING:
    from remoteexec.host import Host
    from remoteexec.lab import Lab
    from remoteexec.master import Master
    from remoteexec.stack import Stack, StackEvent

__all__ = ["COMMANDS", "EXIT_CODES", "add_arguments", "run"]

#: The subcommands this module adds.
COMMANDS = ("up", "config", "exec")
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = (
    "exit codes: 0 ok; 1 a service failed (exec: a host's command failed or it could"
    " not connect); 2 a usage or stack file error; 130 interrupted (Ctrl-C)"
)
UP_HELP = """\
Start the stack in the foreground: progress per service (host, state, elapsed)
while it starts, a live table on a terminal and plain lines otherwise; then the
services' logs, each line prefixed 'service@host |', until Ctrl-C; then bring
everything down, dependents first. A service that is not a job and exits for
good brings the rest down (exit 1), unless --keep-going."""
#: Seconds a Ctrl-C gives the stack to stop in order before everything is killed.
ABORT_AFTER = 10.0
#: Seconds between two reads of the services' logs while following them.
FOLLOW_POLL = 0.3
#: Lines read per service per poll; more than this between two polls are skipped.
FOLLOW_LINES = 200
#: The interpreter lab hosts run (they share this machine's /usr).
LAB_PYTHON = "/usr/bin/python3"


def add_arguments(subparsers: Any) -> None:
    """Add ``up``, ``config`` and ``exec`` to an argparse ``add_subparsers()`` object."""
    fmt = argparse.RawDescriptionHelpFormatter
    up = subparsers.add_parser(
        "up",
        help="start a stack file's services, follow their logs until Ctrl-C, bring them down",
        description=UP_HELP,
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    up.add_argument("file", metavar="FILE", help="the stack file (TOML)")
    _lab_option(up)
    up.add_argument(
        "--keep-going",
        action="store_true",
        help="when a service exits for good, keep the others running (default: bring all down)",
    )
    up.add_argument("--json", action="store_true", help="events and results as JSON lines")
    up.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="leave the services running after this process (see status, logs, down)",
    )
    up.add_argument("-p", "--project", metavar="NAME", help="with -d: the project name")
    up.add_argument(
        "--host-state-dir",
        metavar="DIR",
        help="with -d: the hosts' state directory (default: their $XDG_STATE_HOME)",
    )

    config = subparsers.add_parser(
        "config",
        help="validate a stack file and print its topology and start order",
        epilog=EXIT_CODES,
    )
    config.add_argument("file", metavar="FILE", help="the stack file (TOML)")
    config.add_argument("--json", action="store_true", help="print JSON")

    exe = subparsers.add_parser(
        "exec",
        help="run a command on hosts of a stack file, in parallel",
        usage="remoteexec exec [options] FILE HOSTS -- COMMAND [ARG...]",
        epilog=EXIT_CODES,
    )
    exe.add_argument("file", metavar="FILE", help="the stack file (TOML)")
    exe.add_argument("hosts", metavar="HOSTS", help="host names, comma-separated, or 'all'")
    exe.add_argument("command", nargs="*", default=[], help="the command, after --")
    _lab_option(exe)
    exe.add_argument("--timeout", type=float, default=None, help="seconds per host")
    exe.add_argument("--json", action="store_true", help="one JSON line per host")
    exe.add_argument(
        "--context",
        action="store_true",
        help="open a context on each host (default: plain SSH, no Python on the hosts,"
        " when no host has 'via', 'ssh_args' or target 'local')",
    )
    exe.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="plain SSH: hosts served at a time (default: remoteexec.fanout.DEFAULT_WORKERS,"
        " 16; more for hosts far away, where the time is round trips, not CPU)",
    )


def _lab_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lab",
        type=int,
        metavar="N",
        help="run on a fresh lab of N hosts (the file's hosts mapped onto them; needs root)",
    )


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``up``/``config``/``exec``; return the exit status."""
    try:
        topology = stackfile.read(args.file)
    except stackfile.StackFileError as e:
        _error(str(e))
        return USAGE
    if args.cmd == "config":
        return _config(topology, args.json)
    if getattr(args, "lab", None) is not None:
        problem = _lab_problem(args.lab)
        if problem:
            _error(problem)
            return USAGE
    if args.cmd == "exec":
        return _exec(topology, args)
    if args.detach:
        from remoteexec.cli import detached

        return detached.up(topology, args)
    if args.project or args.host_state_dir:
        _error("-p and --host-state-dir go with -d")
        return USAGE
    return Up(topology, args).run()


def _error(text: str) -> None:
    print("remoteexec: %s" % text, file=sys.stderr, flush=True)


def _lab_problem(hosts: int) -> Optional[str]:
    """Why ``--lab hosts`` cannot run here, or None."""
    if hosts < 1:
        return "--lab N: N must be at least 1, got %d" % hosts
    from remoteexec.lab import Lab

    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "--lab needs root (it builds network namespaces with their own sshd)"
    ok, why = Lab.available()
    return None if ok else "--lab: cannot build a lab on this machine: %s" % why


# -- config ----------------------------------------------------------------


def _config(topology: stackfile.Topology, as_json: bool) -> int:
    if as_json:
        print(json.dumps(topology.to_dict(), indent=2))
        return OK
    print("stack %s (%s)" % (topology.name, topology.path))
    print("hosts:")
    for name, host in topology.hosts.items():
        via = " via %s" % host.via if host.via else ""
        options = " ".join("%s=%s" % (k, v) for k, v in host.options.items())
        print("  %-10s %s%s  %s" % (name, host.target, via, options))
    print("services:")
    for name, spec in topology.services.items():
        deps = ", ".join("%s (%s)" % d for d in spec.depends_on.items()) or "-"
        kind = "job" if spec.job else spec.kind
        print("  %-10s %-10s on %-8s depends on %s" % (name, kind, ",".join(spec.hosts), deps))
        detail = _detail(spec)
        if detail:
            print("  %-10s %s" % ("", detail))
    print("start order:")
    for i, wave in enumerate(topology.waves(), 1):
        print("  wave %d: %s" % (i, ", ".join(wave)))
    return OK


def _detail(spec: stackfile.ServiceSpec) -> str:
    table = spec.table
    if spec.kind == "replicaset":
        return "members %s" % " ".join(table["members"])
    if spec.kind == "tarantool":
        return "listen %s" % table["listen"]
    command = table["command"]
    text = command if isinstance(command, str) else " ".join(command)
    ready = table.get("ready") or {}
    checks = ", ".join("%s %s" % item for item in ready.items())
    return "command %s%s" % (text, "; ready when %s" % checks if checks else "")


# -- hosts -----------------------------------------------------------------


def _hosts(
    topology: stackfile.Topology,
    master: Master,
    lab: Optional[Lab],
    names: Optional[List[str]] = None,
) -> Dict[str, Host]:
    """The file's hosts (``names``, default all) opened: on the lab, mapped
    in order (file host i on lab host i mod N), or as the file says."""
    if lab is None:
        return stackfile.connect(topology, master, names)
    wanted = list(topology.hosts) if names is None else names
    index = {name: i % len(lab.hosts) for i, name in enumerate(topology.hosts)}
    # A lab host is named after the first file host mapped onto it.
    first = {index[n]: n for n in reversed(wanted)}

    def open_one(i: int) -> Host:
        return master.connect(
            lab.targets[i],
            identity_file=lab.identity_file,
            known_hosts_file=lab.known_hosts_file,
            python=LAB_PYTHON,
            name=first[i],
        )

    with concurrent.futures.ThreadPoolExecutor(len(first)) as pool:
        opened = dict(zip(first, pool.map(open_one, first)))
    return {name: opened[index[name]] for name in wanted}


def _lab(stack: ExitStack, hosts: int, topology: stackfile.Topology) -> Lab:
    from remoteexec.lab import Lab

    return stack.enter_context(Lab(hosts=hosts, share=[topology.directory]))


# -- exec ------------------------------------------------------------------


def _exec(topology: stackfile.Topology, args: argparse.Namespace) -> int:
    from remoteexec.errors import RemoteExecError
    from remoteexec.fanout import DEFAULT_WORKERS, MAX_WORKERS

    if not args.command:
        _error("exec: no command given (put it after --)")
        return USAGE
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        _error("exec: --workers must be in 1..%d, got %d" % (MAX_WORKERS, args.workers))
        return USAGE
    names = list(topology.hosts) if args.hosts == "all" else args.hosts.split(",")
    unknown = [n for n in names if n not in topology.hosts]
    if unknown:
        from remoteexec.stack.schema import did_you_mean

        _error(
            "exec: unknown host %r%s (hosts in %s: %s)"
            % (
                unknown[0],
                did_you_mean(unknown[0], list(topology.hosts)),
                topology.path,
                ", ".join(topology.hosts),
            )
        )
        return USAGE
    try:
        with ExitStack() as resources:
            lab = _lab(resources, args.lab, topology) if args.lab else None
            plain = None if args.context else _plain_hosts(topology, lab, names)
            if plain is not None:
                from remoteexec.fanout import run_plain

                _import_paramiko()
                workers = DEFAULT_WORKERS if args.workers is None else args.workers
                by_name = run_plain(plain, args.command, timeout=args.timeout, workers=workers)
                results: List[Tuple[str, Any]] = list(by_name.items())
            else:
                results = _exec_in_contexts(resources, topology, lab, names, args)
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED
    except (RemoteExecError, ValueError, TypeError) as e:
        _error(str(e))
        return FAILED
    failed = 0
    for name, result in results:
        failed += _print_result(name, result, args.json)
    return FAILED if failed else OK


def _plain_hosts(
    topology: stackfile.Topology, lab: Optional[Lab], names: List[str]
) -> Optional[List[Any]]:
    """The hosts as :class:`remoteexec.fanout.PlainHost`, or None when one of
    them needs a context (a hop, ssh_args, 'local')."""
    import importlib.util

    from remoteexec.fanout import PlainHost, plain_ssh_problem

    if importlib.util.find_spec("paramiko") is None:  # a dependency, but be safe
        return None
    specs = [topology.hosts[n] for n in names]
    if any(plain_ssh_problem(s.target, s.options, s.via) for s in specs):
        return None
    if lab is None:
        return [PlainHost.from_options(s.name, s.target, s.options) for s in specs]
    index = {name: i % len(lab.hosts) for i, name in enumerate(topology.hosts)}
    return [
        PlainHost(
            n,
            lab.targets[index[n]],
            identity_file=lab.identity_file,
            known_hosts_file=lab.known_hosts_file,
        )
        for n in names
    ]


def _import_paramiko() -> None:
    """Import paramiko without invoke: paramiko imports invoke (when Fabric put
    it there) only for ssh_config's ``Match exec``, which the fast path never
    reads, and it costs ~0.15 s of a cold ``exec``. Nothing else changes."""
    blocked = "invoke" not in sys.modules
    if blocked:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # import invoke: ImportError
    try:
        import paramiko  # noqa: F401
    finally:
        if blocked and sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]


def _exec_in_contexts(
    resources: ExitStack,
    topology: stackfile.Topology,
    lab: Optional[Lab],
    names: List[str],
    args: argparse.Namespace,
) -> List[Tuple[str, Any]]:
    """Run the command through a context on each host (Host.run: no shell),
    all at once from this thread (:func:`remoteexec.fanout.run_all`)."""
    import remoteexec as rx

    master = resources.enter_context(rx.Master())
    hosts = _hosts(topology, master, lab, names)
    results = rx.run_all([hosts[n] for n in names], args.command, timeout=args.timeout)
    return list(zip(names, results))


def _print_result(name: str, result: Any, as_json: bool) -> int:
    """Print one host's result; 1 if it failed."""
    if isinstance(result, Exception):
        if as_json:
            print(json.dumps({"host": name, "error": str(result)}), flush=True)
        else:
            print("%s: error: %s" % (name, result), flush=True)
        return 1
    if as_json:
        row = {
            "host": name,
            "exit_code": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
        }
        print(json.dumps(row), flush=True)
    else:
        for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
            for line in text.splitlines():
                print("%s | %s" % (name, line), file=stream)
        print("%s: exit %d" % (name, result.returncode), flush=True)
    return 0 if result.returncode == 0 else 1


# -- up --------------------------------------------------------------------


class Up:
    """One foreground ``up``: start, follow, bring down; owns its stack."""

    def __init__(self, topology: stackfile.Topology, args: argparse.Namespace) -> None:
        self.topology = topology
        self.args = args
        self.as_json = bool(args.json)
        self.out: TextIO = sys.stdout
        #: Serialises lines on stdout (never held while rich renders).
        self.lock = threading.Lock()
        self.rows_lock = threading.Lock()
        self.started = time.monotonic()
        #: service → [host, state, when it entered the state (monotonic), seconds]
        self.rows: Dict[str, List[Any]] = {}
        self.live: Any = None
        #: Set when a service exits for good (not a job): ends the log following.
        self.exited = threading.Event()
        self.exit_reason = ""
        self.master: Optional[Master] = None
        #: Ctrl-C seen so far, and the timer that aborts a teardown that takes too long.
        self.interrupts = 0
        self.abort_timer: Optional[threading.Timer] = None

    # -- output

    def emit(self, line_type: str, **fields: Any) -> None:
        """One JSON line (``--json``): ``{"type": line_type, ...fields}``."""
        with self.lock:
            print(json.dumps({"type": line_type, **fields}, default=str), file=self.out, flush=True)

    def say(self, text: str) -> None:
        if self.as_json:
            self.emit("message", text=text)
            return
        live = self.live
        if live is not None:
            # rich locks its console itself; holding ours here would deadlock
            # against its refresh thread, which reads the rows.
            live.console.print(text, markup=False, highlight=False)
            return
        with self.lock:
            print(text, file=self.out, flush=True)

    def on_event(self, event: StackEvent) -> None:
        """A stack event: the table's row, a line, or a JSON line."""
        now = time.monotonic()
        with self.rows_lock:
            self.rows[event.service] = [event.host, event.kind, now, event.seconds]
        if (
            event.kind == "exited"
            and event.final
            and not event.job
            and not self.args.keep_going
            and not self.exited.is_set()
        ):
            self.exit_reason = "%s@%s exited with code %s" % (
                event.service,
                event.host,
                event.exit_code,
            )
            self.exited.set()
        if self.as_json:
            self.emit("event", **event.as_dict())
            return
        if self.live is not None and event.kind in ("starting", "ready"):
            return  # the live table shows it
        took = " (%.2f s)" % event.seconds if event.seconds is not None else ""
        code = " code %s" % event.exit_code if event.exit_code is not None else ""
        text = "[%7.2fs] %s@%s %s%s%s" % (
            now - self.started,
            event.service,
            event.host,
            event.kind,
            code,
            took,
        )
        if event.message:
            text += ": " + event.message.splitlines()[0]
        self.say(text)
        failed = event.kind in ("failed", "exited") and event.exit_code != 0
        if event.output_tail and failed and not self.interrupts:
            for line in event.output_tail.splitlines()[-10:]:
                self.say("    %s | %s" % (event.service, line))

    def table(self) -> Any:
        """The live progress table (rich): service, host, state, elapsed."""
        from rich.table import Table
        from rich.text import Text

        grid = Table(title="stack %s" % self.topology.name, expand=False)
        for column in ("service", "host", "state", "elapsed"):
            grid.add_column(column)
        now = time.monotonic()
        with self.rows_lock:
            rows = dict(self.rows)
        for name in self.topology.services:
            for service, (host, state, since, seconds) in rows.items():
                if service != name and not service.startswith(name + "."):
                    continue
                if seconds is None:
                    shown = "%.1f s" % (now - since) if state == "starting" else ""
                else:
                    shown = "%.2f s" % seconds
                style = {"ready": "green", "failed": "red", "exited": "yellow"}.get(state, "")
                grid.add_row(service, host, Text(state, style=style), shown)
        return grid

    def rich_live(self) -> Any:
        """A rich Live display when stdout is a terminal and rich is there, else None."""
        if self.as_json or not self.out.isatty():
            return None
        try:
            from rich.live import Live
        except ImportError:
            return None

        class Renderable:
            def __rich__(this) -> Any:  # rich's hook; the table is the outer self's
                return self.table()

        return Live(Renderable(), refresh_per_second=8, transient=False)

    # -- the run

    def run(self) -> int:
        import remoteexec as rx
        from remoteexec.errors import RemoteExecError
        from remoteexec.stack import StackError

        stack: Optional[Stack] = None
        code = OK
        # Passwords leave this process's environment before any host (a local
        # context, and what it starts, inherits it) is opened.
        environ = dict(os.environ)
        for name in self.topology.secrets():
            os.environ.pop(name, None)
        previous = signal.signal(signal.SIGINT, self.on_sigint)
        with ExitStack() as resources:
            resources.callback(signal.signal, signal.SIGINT, previous)
            resources.callback(self.cancel_abort)
            try:
                lab = _lab(resources, self.args.lab, self.topology) if self.args.lab else None
                if lab is not None:
                    self.say("lab %s: %s" % (lab.name, ", ".join(lab.targets)))
                master = resources.enter_context(rx.Master())
                self.master = master
                self.run_started(master.run_id)
                hosts = _hosts(self.topology, master, lab)
                self.connected(hosts)
                try:
                    stack = stackfile.build(self.topology, hosts, environ)
                    stack.validate()
                except (ValueError, TypeError) as e:
                    # What only the stack can check (an endpoint a reference names).
                    _error("%s: %s" % (self.topology.path, e))
                    return self.finished(USAGE)
                stack.subscribe(self.on_event)
                resources.callback(self.down, stack)
                timings = self.start(stack)
                self.result("up", timings=timings)
                code = self.follow(stack)
            except KeyboardInterrupt:
                self.say("interrupted: bringing the stack down (Ctrl-C again to kill at once)")
                code = INTERRUPTED
            except StackError as e:
                self.say("failed: %s" % e)
                code = INTERRUPTED if self.interrupts else FAILED
            except (RemoteExecError, ValueError, TypeError) as e:
                _error(str(e))
                code = INTERRUPTED if self.interrupts else FAILED
        return self.finished(code)

    def on_sigint(self, signum: int, frame: Any) -> None:
        """Ctrl-C: the first one interrupts (the stack stops what it started,
        in order) and arms :data:`ABORT_AFTER`; the next one aborts at once."""
        del signum, frame
        self.interrupts += 1
        if self.interrupts == 1:
            self.abort_timer = threading.Timer(ABORT_AFTER, self.abort)
            self.abort_timer.daemon = True
            self.abort_timer.start()
            raise KeyboardInterrupt
        threading.Thread(target=self.abort, name="remoteexec-abort", daemon=True).start()

    def abort(self) -> None:
        """Close the master: every process of the run is killed on every host,
        and whatever still waits on them (a start under way) fails at once."""
        master = self.master
        if master is not None:
            self.say("killing what is left")
            master.close()

    def cancel_abort(self) -> None:
        if self.abort_timer is not None:
            self.abort_timer.cancel()

    def finished(self, code: int) -> int:
        self.result("down", exit_code=code)
        return code

    def start(self, stack: Stack) -> Mapping[str, float]:
        live = self.rich_live()
        if live is None:
            return stack.up()
        self.live = live
        try:
            with live:
                return stack.up()
        finally:
            self.live = None

    def run_started(self, run_id: str) -> None:
        """The run id marks every process of this ``up`` (REMOTEEXEC_RUN) on every host."""
        if self.as_json:
            self.emit("run", stack=self.topology.name, run_id=run_id, pid=os.getpid())
        else:
            self.say("stack %s: run %s" % (self.topology.name, run_id))

    def connected(self, hosts: Mapping[str, Host]) -> None:
        """``--json``: each host's target and context pid (for tools that watch the run)."""
        if self.as_json:
            rows = {n: {"host": h.name, "context_pid": h.info.get("pid")} for n, h in hosts.items()}
            self.emit("hosts", hosts=rows)

    def result(self, what: str, **fields: Any) -> None:
        if self.as_json:
            self.emit("result", result=what, **fields)
        elif what == "up":
            took = time.monotonic() - self.started
            jobs = all(spec.job for spec in self.topology.services.values())
            then = "its jobs are done" if jobs else "following logs (Ctrl-C stops)"
            self.say("stack %s up in %.2f s; %s" % (self.topology.name, took, then))
        else:
            self.say("stack %s down (exit %d)" % (self.topology.name, fields["exit_code"]))

    def follow(self, stack: Stack) -> int:
        """Print new log lines, ``service@host | line``, until Ctrl-C or a final exit."""
        seen: Dict[str, List[str]] = {}
        hosts = {row["service"]: row["host"] for row in stack.status()}
        # Runs until Ctrl-C; bounded all the same (about 9 years of polls).
        for _ in range(10**9):
            for name in stack.services:
                try:
                    lines = stack.logs(name, lines=FOLLOW_LINES).splitlines()
                except Exception:  # a service gone while reading: its event says why
                    continue
                fresh = _new_lines(seen.get(name, []), lines)
                seen[name] = lines
                for line in fresh:
                    self.log_line(name, hosts.get(name, "?"), line)
            if all(spec.job for spec in self.topology.services.values()):
                return OK  # only jobs, all done: nothing left to follow
            if self.exited.wait(FOLLOW_POLL):
                self.say("%s: bringing the stack down" % self.exit_reason)
                return FAILED
        return OK

    def log_line(self, service: str, host: str, line: str) -> None:
        if self.as_json:
            self.emit("log", service=service, host=host, line=line)
        else:
            self.say("%s@%s | %s" % (service, host, line))

    def down(self, stack: Stack) -> None:
        from remoteexec.errors import RemoteExecError

        try:
            stack.down()
        except KeyboardInterrupt:
            pass  # down() finished its stops first; the abort timer bounds the rest
        except (RemoteExecError, ValueError) as e:
            if not self.interrupts:
                _error("down: %s" % e)


def _new_lines(old: List[str], new: List[str]) -> List[str]:
    """The lines of ``new`` past what ``old`` (the previous tail) already showed."""
    for k in range(min(len(old), len(new)), 0, -1):
        if old[-k:] == new[:k]:
            return new[k:]
    return new
