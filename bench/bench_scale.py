"""Fan-out to N lab hosts: ``remoteexec exec`` against pyinfra and Ansible.

The task: an ad-hoc ``uptime`` on every host, N = 8, 16, 32, 64 lab hosts (the
first N of one 64-host lab). Tools, each a fresh process run the way a user
would run it, all with strict host key checking against the lab's known_hosts:

- ``remoteexec exec FILE all -- uptime`` cold: a fresh process, connections
  included (the plain-SSH fast path, :mod:`remoteexec.fanout`);
- remoteexec warm: contexts already open (``Master.connect_all`` once, untimed),
  then ``rx.run_all(hosts, ["uptime"])``: every request sent at once, the
  replies awaited together on one thread (the timed region is that call only);
- pyinfra ``pyinfra -y INVENTORY exec -- uptime`` (paramiko under gevent; it has
  no warm mode);
- ansible-core ``ansible all -m command -a uptime -f N``, pipelining on and off,
  cold (no ControlMaster) and warm (pipelining on, ControlPersist: a first run
  opens the masters, untimed; the next runs are timed).

Each figure is the median of the rounds; within a round the tools run one after
the other (interleaved), so a drift in load hits them alike. The labs' shell
init: ``as is`` shares the machine's filesystem (``Lab(shared_fs=True)``), so
root's ``~/.bashrc`` runs for every shell sshd starts; ``trivial`` covers it
with an empty file (``Lab(shell_init="trivial")``).

Warm figures are, per round, the median of :data:`WARM_REPEATS` timed runs after
the untimed one that opens the connections, for remoteexec and Ansible alike.

Where the CPU goes, per cold tool run: the master's side (the tool's process
tree, :data:`CLIENT_CPU`) and the hosts' side (:data:`HOST_CPU`: the lab's sshd
trees: sshd itself, the login shell and its start-up files, the command; each
listening sshd's own CPU and that of the sessions it reaped, read from
/proc/PID/stat once every session of the run has ended).

Run: ``python bench/bench_scale.py`` (default, what run_all.py runs: 5 rounds of
remoteexec and pyinfra but 1 of Ansible, which takes most of the time, at every
N with the shell init as is, and the trivial init at N=32 only; ~8 minutes on
2 idle cores, far more under load) or ``--full`` (5 rounds of remoteexec and
pyinfra, 3 of Ansible, both shell inits at every N; ~30 minutes). Needs root.
The plot goes to docs/_static/scale.png. For a quick look at one part:
``--sizes 32 --tools cold,pyinfra --rounds 7 --inits trivial`` (see ``--help``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import _common as c

SIZES = (8, 16, 32, 64)
PLOT = os.path.join(c.REPO_ROOT, "docs", "_static", "scale.png")
VENV_BIN = os.path.dirname(sys.executable)
TICK = float(os.sysconf("SC_CLK_TCK"))
#: Seconds one tool run may take before the benchmark gives up on it.
RUN_LIMIT = 300.0
#: remoteexec cold at most this times pyinfra, at every N.
PYINFRA_FACTOR = 1.0
#: Ansible warm at least this times remoteexec warm, at every N.
ANSIBLE_WARM_FACTOR = 100.0
#: Timed warm runs per round, after the untimed one that opens the connections;
#: the round's figure is their median (remoteexec and Ansible alike).
WARM_REPEATS = 3
#: The command every tool runs on every host.
COMMAND = "uptime"
#: Tool runs that failed (kept out of the medians, listed in the report).
FAILURES: List[str] = []
#: CPU seconds (user+sys) of the last tool run's process tree, on this side.
LAST_CPU = 0.0
#: {(shell init, N, tool): [CPU seconds of each cold run's process tree]}.
CLIENT_CPU: Dict[Tuple[str, int, str], List[float]] = {}
#: {(shell init, N, tool): [CPU seconds of the lab's sshd trees in each cold run]}.
HOST_CPU: Dict[Tuple[str, int, str], List[float]] = {}
#: Longest wait for a run's SSH sessions to end before its hosts' CPU is read.
SETTLE_LIMIT = 30.0

COLD = "remoteexec exec (cold)"
WARM = "remoteexec warm"
PYINFRA = "pyinfra (cold)"
ANSIBLE_PIPE = "Ansible, pipelining (cold)"
ANSIBLE_NOPIPE = "Ansible, no pipelining (cold)"
ANSIBLE_WARM = "Ansible, pipelining (warm)"
TOOLS = (COLD, WARM, PYINFRA, ANSIBLE_PIPE, ANSIBLE_NOPIPE, ANSIBLE_WARM)
#: The tools run as one fresh process each, whose CPU this side can count.
COLD_TOOLS = (COLD, PYINFRA, ANSIBLE_PIPE, ANSIBLE_NOPIPE)
ANSIBLE_TOOLS = (ANSIBLE_PIPE, ANSIBLE_NOPIPE, ANSIBLE_WARM)
#: ``--tools`` names and the tools each one runs.
TOOL_NAMES: Dict[str, Tuple[str, ...]] = {
    "remoteexec": (COLD, WARM),
    "cold": (COLD,),
    "warm": (WARM,),
    "pyinfra": (PYINFRA,),
    "ansible": ANSIBLE_TOOLS,
}
#: ``--inits`` names: the shell init of each.
INITS = {"as-is": "as is", "trivial": "trivial"}


def _tool(name: str) -> str:
    """The venv's console script ``name`` (pyinfra, ansible, remoteexec)."""
    path = os.path.join(VENV_BIN, name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: str = "/") -> float:
    """Seconds ``argv`` took; RuntimeError with its output tail when it fails.
    Its process tree's CPU seconds go to :data:`CLIENT_CPU` (load-proof)."""
    global LAST_CPU
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    took = time.perf_counter() - t0
    LAST_CPU = _children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(
            "%s exited %d:\n%s%s"
            % (argv[0], done.returncode, done.stdout[-1500:], done.stderr[-1500:])
        )
    return took


def _sshd_cpu(pid: int) -> float:
    """CPU seconds of a listening sshd: its own and its reaped sessions' (0 if gone)."""
    from remoteexec.target.procs import proc_stat

    fields = proc_stat(pid)  # utime, stime, cutime, cstime: items 11-14
    return sum(int(x) for x in fields[11:15]) / TICK if fields else 0.0


def hosts_cpu(lab: Any, n: int) -> Optional[float]:
    """CPU seconds the first ``n`` lab hosts' sshds and their finished sessions
    have used, once no session is left (None if one is still open after
    :data:`SETTLE_LIMIT` seconds: then the figure would be short)."""
    from remoteexec.target.procs import children

    pids = [h.sshd_pid for h in lab.hosts[:n]]
    deadline = time.monotonic() + SETTLE_LIMIT
    while any(children(pid) for pid in pids):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return sum(_sshd_cpu(pid) for pid in pids)


class Peers:
    """Inventories and environments of every tool for the first N lab hosts."""

    def __init__(self, lab: Any, work: str) -> None:
        self.lab = lab
        self.work = work
        self.ansible_home = os.path.join(work, "ansible")
        self.control = os.path.join(work, "cp")
        os.makedirs(self.control, mode=0o700)

    def _hosts(self, n: int) -> List[Any]:
        return self.lab.hosts[:n]

    def stack_file(self, n: int, known_hosts: Optional[str] = None) -> str:
        path = os.path.join(self.work, "stack%d.toml" % n)
        lines = [
            'name = "scale"',
            "[defaults]",
            "identity_file = %r" % self.lab.identity_file,
            "known_hosts_file = %r" % (known_hosts or self.lab.known_hosts_file),
            "python = %r" % c.PY,
            "[hosts]",
        ]
        lines += ['%s = { target = "%s" }' % (h.name, h.target) for h in self._hosts(n)]
        # A stack file needs a service; exec never starts it.
        lines += ["[services.idle]", 'on = "h1"', 'command = ["true"]', "job = true"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def remoteexec(self, n: int) -> float:
        argv = [_tool("remoteexec"), "exec", self.stack_file(n), "all", "--", COMMAND]
        return _run(argv)

    def pyinfra_inventory(self, n: int, known_hosts: Optional[str] = None) -> str:
        path = os.path.join(self.work, "inventory%d.py" % n)
        data = {
            "ssh_user": self.lab.user,
            "ssh_key": self.lab.identity_file,
            "ssh_known_hosts_file": known_hosts or self.lab.known_hosts_file,
            "ssh_strict_host_key_checking": "yes",
        }
        hosts = [(h.address, dict(data, ssh_port=h.port)) for h in self._hosts(n)]
        with open(path, "w") as f:
            f.write("hosts = %r\n" % (hosts,))
        return path

    def pyinfra(self, n: int, known_hosts: Optional[str] = None) -> float:
        inventory = self.pyinfra_inventory(n, known_hosts)
        argv = [_tool("pyinfra"), "-y", "--parallel", str(n), inventory, "exec", "--", COMMAND]
        return _run(argv, cwd=self.work)

    def ansible_env(
        self, pipelining: bool, persist: bool, known_hosts: Optional[str] = None
    ) -> Dict[str, str]:
        ssh_args = [
            "-o StrictHostKeyChecking=yes",
            "-o UserKnownHostsFile=%s" % (known_hosts or self.lab.known_hosts_file),
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentitiesOnly=yes",
        ]
        if persist:
            ssh_args += ["-o ControlMaster=auto", "-o ControlPersist=120s"]
        else:
            ssh_args += ["-o ControlMaster=no", "-o ControlPath=none"]
        env = dict(os.environ)
        env.update(
            ANSIBLE_HOME=self.ansible_home,
            ANSIBLE_LOCAL_TEMP=os.path.join(self.ansible_home, "tmp"),
            ANSIBLE_REMOTE_TMP="/tmp/.ansible-bench",
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_PIPELINING="True" if pipelining else "False",
            ANSIBLE_SSH_ARGS=" ".join(ssh_args),
            ANSIBLE_SSH_CONTROL_PATH_DIR=self.control,
            ANSIBLE_PRIVATE_KEY_FILE=self.lab.identity_file,
            ANSIBLE_REMOTE_USER=self.lab.user,
            ANSIBLE_PYTHON_INTERPRETER=c.PY,
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="False",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="False",
            LC_ALL="C.UTF-8",
        )
        return env

    def ansible(
        self,
        n: int,
        pipelining: bool,
        persist: bool = False,
        known_hosts: Optional[str] = None,
    ) -> float:
        inventory = ",".join(h.address for h in self._hosts(n)) + ","
        argv = [_tool("ansible"), "all", "-i", inventory, "-f", str(n)]
        argv += ["-m", "command", "-a", COMMAND]
        return _run(argv, env=self.ansible_env(pipelining, persist, known_hosts), cwd=self.work)

    def ansible_warm(self, n: int) -> float:
        """A first run opens the ControlPersist masters (untimed); the median of
        the next :data:`WARM_REPEATS` runs."""
        try:
            self.ansible(n, True, persist=True)
            return statistics.median(
                self.ansible(n, True, persist=True) for _ in range(WARM_REPEATS)
            )
        finally:
            self.close_masters()

    def close_masters(self) -> None:
        """End Ansible's ControlPersist masters (ssh -O exit on each socket)."""
        for name in os.listdir(self.control):
            subprocess.run(
                ["ssh", "-O", "exit", "-o", "ControlPath=" + os.path.join(self.control, name), "x"],
                capture_output=True,
                timeout=10,
                check=False,
            )


def check_strict(peers: Peers) -> str:
    """Prove every tool checks host keys: each is refused with an empty known_hosts."""
    empty = os.path.join(peers.work, "empty_known_hosts")
    open(empty, "w").close()
    refused = []
    attempts: Dict[str, Callable[[], float]] = {
        "remoteexec": lambda: _run(
            [_tool("remoteexec"), "exec", peers.stack_file(1, empty), "all", "--", "true"]
        ),
        "pyinfra": lambda: peers.pyinfra(1, empty),
        "ansible": lambda: peers.ansible(1, True, known_hosts=empty),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except RuntimeError as e:
            if "host key" not in str(e).lower():
                raise
            refused.append(name)
            continue
        raise AssertionError("%s ran with an empty known_hosts: host keys not checked" % name)
    return ", ".join(refused)


def remoteexec_warm(lab: Any, n: int) -> float:
    """Open contexts on the first ``n`` hosts (untimed, as is their first
    command), then time ``uptime`` on all of them: the median of
    :data:`WARM_REPEATS` fan-outs."""
    import remoteexec as rx
    from remoteexec.errors import RemoteExecError

    try:
        with rx.Master() as master:
            targets = [h.target for h in lab.hosts[:n]]
            opened = master.connect_all(targets, **dict(c.connect_options(lab), connect_timeout=30))
            warm_run(opened)
            return statistics.median(warm_run(opened) for _ in range(WARM_REPEATS))
    except RemoteExecError as e:
        raise RuntimeError(str(e)) from e


def warm_run(hosts: Sequence[Any]) -> float:
    """Seconds for ``uptime`` on every open host at once (``rx.run_all``: no
    thread per host; the timed region is the fan-out only)."""
    import remoteexec as rx

    t0 = time.perf_counter()
    results = rx.run_all(hosts, [COMMAND])
    took = time.perf_counter() - t0
    bad = [r for r in results if isinstance(r, Exception) or r.returncode != 0]
    if bad:
        raise RuntimeError("uptime failed: %s" % (bad[0],))
    return took


def command_cpu(runs: int = 100) -> float:
    """CPU seconds (user+sys) of one run of :data:`COMMAND` itself, run here
    ``runs`` times with no shell: what every host spends whatever the tool."""
    before = os.times()
    for _ in range(runs):
        subprocess.run([COMMAND], stdout=subprocess.DEVNULL, check=True)
    after = os.times()
    spent = after.children_user + after.children_system
    return (spent - before.children_user - before.children_system) / runs


def ratio(a: float, b: float) -> str:
    """``a / b`` with 2 decimals (0.96x, not 1.0x: these ratios sit near 1)."""
    return "%.2fx" % (a / b) if b > 0 else "n/a"


def measure(
    shell_init: str,
    sizes: Sequence[int],
    rounds: int,
    ansible_rounds: int,
    tools: Sequence[str] = TOOLS,
) -> Dict[int, Dict[str, List[float]]]:
    """{N: {tool: [seconds per round]}} of ``tools`` on one lab of max(sizes) hosts."""
    from remoteexec.lab import Lab

    times: Dict[int, Dict[str, List[float]]] = {n: {t: [] for t in TOOLS} for n in sizes}
    lab_init = "trivial" if shell_init == "trivial" else "host"
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab(hosts=max(sizes), shared_fs=True, shell_init=lab_init))
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-"))
        c.progress("lab %s: %d hosts, shell init %s" % (lab.name, len(lab.hosts), shell_init))
        peers = Peers(lab, work)
        c.progress("strict host keys: refused by %s" % check_strict(peers))
        runners: Dict[str, Callable[[int], float]] = {
            COLD: peers.remoteexec,
            PYINFRA: peers.pyinfra,
            ANSIBLE_PIPE: lambda n: peers.ansible(n, True),
            ANSIBLE_NOPIPE: lambda n: peers.ansible(n, False),
            ANSIBLE_WARM: peers.ansible_warm,
            WARM: lambda n: remoteexec_warm(lab, n),
        }
        try:
            for r in range(rounds):
                for n in sizes:
                    for tool, runner in runners.items():
                        if tool not in tools or (tool in ANSIBLE_TOOLS and r >= ansible_rounds):
                            continue
                        try:
                            before = hosts_cpu(lab, n) if tool in COLD_TOOLS else None
                            times[n][tool].append(runner(n))
                            if tool in COLD_TOOLS:
                                CLIENT_CPU.setdefault((shell_init, n, tool), []).append(LAST_CPU)
                                after = hosts_cpu(lab, n)
                                if before is not None and after is not None:
                                    used = after - before
                                    HOST_CPU.setdefault((shell_init, n, tool), []).append(used)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            FAILURES.append("%s, N=%d, init %s: %s" % (tool, n, shell_init, e))
                            c.progress("FAILED %s" % FAILURES[-1][:2000])
                    c.progress(
                        "%s round %d N=%d: %s (load %.1f)"
                        % (
                            shell_init,
                            r + 1,
                            n,
                            ", ".join("%s %s" % (t, _cell(_last(times[n][t]))) for t in TOOLS),
                            os.getloadavg()[0],
                        )
                    )
        finally:
            peers.close_masters()
    return times


def _last(samples: List[float]) -> Optional[float]:
    return samples[-1] if samples else None


def _cell(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return "%.3f s" % seconds if seconds < 0.1 else "%.2f s" % seconds


def plot(results: Dict[str, Dict[int, Dict[str, float]]], path: str) -> Optional[str]:
    """Time against host count, one line per tool, a panel per shell init."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    inits = list(results)
    fig, axes = plt.subplots(1, len(inits), figsize=(6 * len(inits), 4.5), squeeze=False)
    for ax, init in zip(axes[0], inits):
        sizes = sorted(results[init])
        for tool in TOOLS:
            xs = [n for n in sizes if tool in results[init][n]]
            ax.plot(xs, [results[init][n][tool] for n in xs], marker="o", label=tool)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlabel("lab hosts")
        ax.set_ylabel("seconds (median)")
        ax.set_title("uptime on every host, shell init %s" % init)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(
    full: bool = False,
    sizes: Sequence[int] = SIZES,
    tools: Sequence[str] = TOOLS,
    rounds: Optional[int] = None,
    inits: Sequence[str] = ("as is", "trivial"),
) -> c.Report:
    """The report; the defaults are the default run (what run_all.py runs).
    ``tools``, ``rounds`` and ``inits`` narrow it down for a quick look."""
    report = c.lab_report(
        "Scale: `remoteexec exec` vs pyinfra and Ansible on 8-64 lab hosts",
        ["pyinfra", "ansible", "paramiko"],
    )
    if report.skipped:
        return report
    default_rounds, ansible_rounds = (5, 3) if full else (5, 1)
    rounds = default_rounds if rounds is None else rounds
    ansible_rounds = min(ansible_rounds, rounds)
    middle = [n for n in sizes if n >= 32][:1] or list(sizes)[-1:]
    plan: List[Tuple[str, Sequence[int]]] = [
        (init, n)
        for init, n in (("as is", sizes), ("trivial", sizes if full else middle))
        if init in inits
    ]
    t0 = time.perf_counter()
    results: Dict[str, Dict[int, Dict[str, float]]] = {}
    for init, sizes in plan:
        raw = measure(init, sizes, rounds, ansible_rounds, tools)
        results[init] = {
            n: {t: statistics.median(v) for t, v in row.items() if v} for n, row in raw.items()
        }
    took = time.perf_counter() - t0
    report.text(
        "An ad-hoc `uptime` on every host; seconds, the median of %d rounds per N (%d for"
        " Ansible; a warm figure is itself the median of %d runs within its round),"
        " the tools interleaved in each round (%s; the whole run took %.0f s, "
        "load average %.1f at the end). Cold: a fresh process, connections included. "
        "Warm: connections already open (remoteexec: contexts from `connect_all`, then "
        '`rx.run_all(hosts, ["uptime"])`, one thread for all hosts; Ansible: '
        "pipelining over ssh ControlPersist masters "
        "opened by a first run). Every tool checks host keys against the lab's "
        "known_hosts (verified: each is refused with an empty one). Shell init *as is*: "
        "the lab shares this machine's filesystem, so root's `~/.bashrc` runs in every "
        'shell sshd starts; *trivial*: `Lab(shell_init="trivial")` binds an empty file '
        "over it. pyinfra runs with `--parallel N`, Ansible with `-f N`; `remoteexec "
        "exec` takes the plain-SSH fast path (paramiko, %d hosts at a time)."
        % (
            rounds,
            ansible_rounds,
            WARM_REPEATS,
            "`--full`: both shell inits at every N"
            if full
            else "the default run: the trivial init at N=32 only; `--full` for the matrix",
            took,
            os.getloadavg()[0],
            _workers(),
        )
    )
    if FAILURES:
        report.text(
            "Runs that failed (left out of the medians):",
            "",
            *["- " + f[:300].replace("\n", " ") for f in FAILURES],
        )
    for init, by_n in results.items():
        report.text("Shell init **%s**:" % init)
        rows = []
        for n in sorted(by_n):
            row = by_n[n]
            cold, py = row.get(COLD), row.get(PYINFRA)
            rows.append([n, *[_cell(row.get(t)) for t in TOOLS], ratio(cold or 0, py or 0)])
        report.table(["N hosts", *TOOLS, "cold / pyinfra"], rows)
        report.text(
            "CPU seconds (user+sys, median) of each cold tool's process tree on the "
            "master's side, init **%s**: what the load of other processes does not change "
            "(the hosts' sshd and shell CPU is not in it)." % init
        )
        cpu_rows = []
        for n in sorted(by_n):
            cells = [CLIENT_CPU.get((init, n, t)) for t in COLD_TOOLS]
            cpu_rows.append([n, *["%.2f" % statistics.median(v) if v else "-" for v in cells]])
        report.table(["N hosts", *COLD_TOOLS], cpu_rows)
        report.text(
            "Where the CPU goes, init **%s**: milliseconds per host (median run's CPU / N)"
            " on the master's side (the tool's process tree) and on the hosts' side (the"
            " lab's sshd trees: sshd, the login shell with its start-up files, the"
            " command; both share this machine's cores)." % init
        )
        report.table(["N hosts", "side", *COLD_TOOLS], _per_host_rows(init, sorted(by_n)))
    if WARM in tools or ANSIBLE_WARM in tools:
        _floor(report, results)
    # A narrowed run (--tools) leaves the docs' plot alone: it would lose lines.
    path = plot(results, PLOT) if set(tools) == set(TOOLS) else None
    if path:
        report.text(
            "Plot of these figures: `%s` (shown in the docs' Benchmarks page)."
            % os.path.relpath(path, c.REPO_ROOT)
        )
    for init, by_n in results.items():
        for n in sorted(by_n):
            row = by_n[n]
            if COLD in row and PYINFRA in row:
                report.target(
                    "exec cold / pyinfra, N=%d, init %s" % (n, init),
                    ratio(row[COLD], row[PYINFRA]),
                    "≤ %.1fx" % PYINFRA_FACTOR,
                    row[COLD] <= PYINFRA_FACTOR * row[PYINFRA],
                )
            if WARM in row and ANSIBLE_WARM in row:
                report.target(
                    "Ansible warm / remoteexec warm, N=%d, init %s" % (n, init),
                    ratio(row[ANSIBLE_WARM], row[WARM]),
                    "≥ %gx" % ANSIBLE_WARM_FACTOR,
                    row[ANSIBLE_WARM] >= ANSIBLE_WARM_FACTOR * row[WARM],
                )
    return report


def _floor(report: c.Report, results: Dict[str, Dict[int, Dict[str, float]]]) -> None:
    """The warm figures against the cost of the command itself."""
    cpus = os.cpu_count() or 1
    per_run = command_cpu()
    report.text(
        "The warm floor: `%s` itself costs %.2f ms of CPU a run on this machine (run here"
        " 100 times, no shell), so N of them take at least N x %.2f ms / %d CPUs, whatever"
        " runs them; remoteexec warm against that floor, and Ansible warm against it:"
        % (COMMAND, per_run * 1000, per_run * 1000, cpus)
    )
    floor_rows = []
    for init, by_n in results.items():
        for n in sorted(by_n):
            floor = n * per_run / cpus
            row = by_n[n]
            if WARM not in row and ANSIBLE_WARM not in row:
                continue
            floor_rows.append(
                [
                    init,
                    n,
                    "%.3f s" % floor,
                    ratio(row[WARM], floor) if WARM in row else "-",
                    ratio(row[ANSIBLE_WARM], floor) if ANSIBLE_WARM in row else "-",
                ]
            )
    report.table(
        ["shell init", "N hosts", "floor", "remoteexec warm / floor", "Ansible warm / floor"],
        floor_rows,
    )


def _per_host_rows(init: str, sizes: Sequence[int]) -> List[List[Any]]:
    """Rows of :func:`run`'s per-host CPU table: master, hosts, total at each N."""
    rows: List[List[Any]] = []
    for n in sizes:
        sides = {}
        for side, table in (("master", CLIENT_CPU), ("hosts", HOST_CPU)):
            sides[side] = [table.get((init, n, t)) for t in COLD_TOOLS]
        for side, cells in sides.items():
            rows.append(
                [
                    n,
                    side,
                    *["%.1f" % (1000 * statistics.median(v) / n) if v else "-" for v in cells],
                ]
            )
        totals = [
            "%.1f" % (1000 * (statistics.median(m) + statistics.median(h)) / n) if m and h else "-"
            for m, h in zip(sides["master"], sides["hosts"])
        ]
        rows.append([n, "total", *totals])
    return rows


def _workers() -> int:
    from remoteexec.fanout import DEFAULT_WORKERS

    return DEFAULT_WORKERS


def _names(text: str, known: Dict[str, Any], what: str) -> List[str]:
    """``text``'s comma-separated names, each checked against ``known``."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in known]
    if bad or not names:
        raise SystemExit("--%s: %r: use some of %s" % (what, text, ", ".join(known)))
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--full``: the whole matrix; ``--sizes 2,4``: other host counts (a smoke run);
    ``--tools``, ``--rounds``, ``--inits``: a part of it, for a quick look."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--full", action="store_true", help="3 rounds of Ansible, both inits at every N"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="host counts")
    parser.add_argument(
        "--tools",
        default=",".join(TOOL_NAMES),
        help="comma-separated: %s (default: all)" % ", ".join(TOOL_NAMES),
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds per N (default 5; Ansible at most 1, 3 with --full)"
    )
    parser.add_argument(
        "--inits", default=",".join(INITS), help="shell inits: as-is, trivial (default: both)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    tools = [t for name in _names(args.tools, TOOL_NAMES, "tools") for t in TOOL_NAMES[name]]
    inits = [INITS[name] for name in _names(args.inits, INITS, "inits")]
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit("--rounds must be at least 1, got %d" % args.rounds)
    return c.bench_main(lambda: run(args.full, sizes, tools, args.rounds, inits))


if __name__ == "__main__":
    raise SystemExit(main())
