"""TarantoolInstance: one tarantool process on a host, started through the supervisor."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import mitogen.core

from ..arguments import environment, port, seconds, unix_path
from ..errors import RemoteExecError, TarantoolError
from .config import (
    LOG_FILE,
    PASSWORD_ENV,
    Version,
    box_cfg_for,
    check_credential,
    render_init_lua,
)
from .lua import call_source

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["TarantoolInstance"]

TARGET = "remoteexec.target.tarantool."
_ANY_ADDRESS = ("", "0.0.0.0", "::", "*", "[::]")
# Seconds a call may take beyond its own bound (a start's time left, a probe's
# or a stop's timeout): what the target side needs to answer once that bound
# is up. Not REPLY_SLACK (30 s): a call to a hung host must end within its
# timeout plus this.
SLACK = 2.0
# host -> {tarantool path -> host_facts()}: one `tarantool --version` per host.
_FACTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FACTS_LOCK = threading.Lock()


def reworded(error: RemoteExecError, message: str, **extra: Any) -> RemoteExecError:
    """The same error (class, host, every field) with ``message``; ``extra`` fields win."""
    details = dict(error.details, **extra)
    fields = dict(command=error.command, exit_code=error.exit_code, output_tail=error.output_tail)
    for key in fields:
        if key in details:
            fields[key] = details.pop(key)
    return type(error)(message, host=error.host, **fields, **details)


def renamed(error: RemoteExecError, label: str, **extra: Any) -> RemoteExecError:
    """The same error, its message prefixed with ``label`` (which member failed)."""
    return reworded(error, "%s: %s" % (label, error.message), **extra)


def secret(user: Optional[str], password: Optional[str]) -> Optional[mitogen.core.Secret]:
    """The password as a Secret (masked in every repr and log), checked for URI use."""
    if password is None:
        return None
    if not user or user == "guest":
        raise ValueError("a password needs a user other than guest")
    check_credential(password)
    return mitogen.core.Secret(password)


def stop_on_exit(stop: Callable[[], Any], exc_type: Optional[type]) -> None:
    """``stop()`` for a ``with`` block; while an error is on its way out, a
    failed stop must not replace it (the master's close still kills all)."""
    if exc_type is None:
        stop()
        return
    with contextlib.suppress(Exception):
        stop()


def check_listen(name: str, listen: Any, *, allow_zero: bool) -> Any:
    """``listen`` as given, once checked: a port, ``"address:port"`` or a unix
    socket (``"/path"``, ``"unix/:/path"``).

    A port outside 1-65535 is a ValueError naming ``name``; 0 ("any free
    port") only with ``allow_zero``.
    """
    if isinstance(listen, bool) or not isinstance(listen, (int, str)):
        raise TypeError(
            "%s must be a port, 'address:port' or a unix socket path, got %s %r"
            % (name, type(listen).__name__, listen)
        )
    if isinstance(listen, int):
        port(name, listen, allow_zero=allow_zero)
        return listen
    text = listen.strip()
    if text.startswith("unix/:"):
        unix_path(name, text[len("unix/:") :])
    elif text.startswith("/"):
        unix_path(name, text)
    elif text.isdigit():
        port(name, text, allow_zero=allow_zero)
    else:
        address, sep, port_text = text.rpartition(":")
        if not sep or not address.strip("[]"):
            raise ValueError(
                "%s must be a port, 'address:port' or a unix socket path, got %r" % (name, listen)
            )
        port(name, port_text, allow_zero=allow_zero)
    return listen


def split_listen(listen: Any) -> Tuple[Optional[str], Optional[int]]:
    """(address or None, port or None) of a ``listen`` value; (None, None) for unix sockets."""
    text = str(listen)
    if text.isdigit():
        return None, int(text)
    address, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or text.startswith(("unix/", "/")):
        return None, None
    return address.strip("[]"), int(port)


class TarantoolInstance:
    """One tarantool instance on a host, under the host's supervisor.

    It inherits every cleanup guarantee of the supervisor: it dies with the
    master (closed, crashed or SIGKILLed) and with a silent partition.

    :param on: the Host (None: this machine, through the default master).
    :param listen: ``"10.20.0.11:3301"``, ``"127.0.0.1:0"`` (any free port;
        :attr:`uri` has the real one after start, and restarts reuse that
        port), a port number or a unix socket path; a port outside 0-65535
        is a ValueError.
    :param box_cfg: extra ``box.cfg`` keys; they win over the test-friendly
        defaults of :func:`~remoteexec.tarantool.config.box_cfg_for`; a key
        set to None removes a default.
    :param app_lua: Lua source run after ``box.cfg`` (schema, functions).
    :param work_dir: data directory on the target; None: a fresh directory in
        the run's directory, removed when the master closes. Data already there
        must belong to this instance: set :attr:`instance_uuid` to its uuid.
    :param tarantool: the binary on the target.
    :param user: a user to create (with ``password``) and grant 'replication'.
    :param password: its password; held as :class:`mitogen.core.Secret` and
        passed to the process in its environment only.
    :param env: extra environment variables for the tarantool process (str
        values; anything else is a TypeError naming the variable).
    :param timeout: seconds for start (all layers together), stop and calls;
        finite and positive (every wait is bounded), else a ValueError.
    """

    def __init__(
        self,
        *,
        on: Optional[Host] = None,
        listen: Any,
        box_cfg: Optional[Mapping[str, Any]] = None,
        app_lua: str = "",
        work_dir: Optional[str] = None,
        tarantool: str = "tarantool",
        user: Optional[str] = None,
        password: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: float = 30,
    ) -> None:
        self.timeout = seconds("timeout", timeout)
        self._on = on
        self.listen = check_listen("listen", listen, allow_zero=True)
        self.env: Dict[str, str] = environment("env", env)
        self.box_cfg: Dict[str, Any] = dict(box_cfg or {})
        self.app_lua = app_lua
        self.work_dir = work_dir
        self.tarantool = tarantool
        self.user = user
        self.password = secret(user, password)
        #: Generated once: the data directory keeps it, so a restart is the same instance.
        self.instance_uuid = str(uuid.uuid4())
        #: A label for messages; a ReplicaSet names its members "<set>-<n>".
        self.name = "tarantool %s" % (listen,)
        #: The role: ``box.cfg.read_only`` and the ``box.info.ro`` readiness waits for.
        self.read_only = False
        # Set by a ReplicaSet: replication URIs, [uuid, name, uri] of the peers, set options.
        self._replication: List[str] = []
        self._peers: List[List[str]] = []
        self._replication_user: Optional[str] = user
        self._replication_timeout: Optional[float] = None
        self._replicaset_uuid: Optional[str] = None
        self._proc: Optional[Dict[str, Any]] = None
        # Guards _forget's compare-and-drop of _proc (see _forget's ``only``).
        self._proc_lock = threading.Lock()
        self._paused = False
        self._uri: Optional[str] = None
        self._output_log: Optional[str] = None
        # listen with port 0 replaced by the port the first start got: restarts keep it.
        self._bound_listen: Optional[str] = None
        # Set by ReplicaSet.restart/resume for one wait: uuids of the peers that are down.
        self._down_peers: frozenset = frozenset()

    def __repr__(self) -> str:
        state = "running" if self._proc else "stopped"
        return "<TarantoolInstance %s %s on %s>" % (self.name, state, self.on.name)

    def __enter__(self) -> TarantoolInstance:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        stop_on_exit(self.stop, exc[0])

    # -- facts -------------------------------------------------------------

    @property
    def on(self) -> Host:
        """The Host it runs on."""
        if self._on is None:
            from ..master import default_host

            self._on = default_host()
        return self._on

    def _facts(self, deadline: Optional[float] = None) -> Dict[str, Any]:
        """Version and address of the host (one call per host, then cached).

        With ``deadline`` (a start's), the call fits in the time left.
        """
        with _FACTS_LOCK:
            facts = _FACTS.get(self.on, {}).get(self.tarantool)
        if facts is None:
            left = 10.0 if deadline is None else max(0.1, deadline - time.monotonic())
            facts = self.on.invoke(
                TARGET + "host_facts",
                self.tarantool,
                min(10.0, left),
                reply_timeout=left + SLACK,
            )
            if self.on.kind == "local" or not facts.get("address"):
                facts["address"] = "127.0.0.1"
            with _FACTS_LOCK:
                _FACTS.setdefault(self.on, {})[self.tarantool] = facts
        return facts

    @property
    def version(self) -> Version:
        """The tarantool version on the host, e.g. ``(2, 6, 0)``."""
        major, minor, patch = self._facts()["version"]
        return (major, minor, patch)

    @property
    def pid(self) -> Optional[int]:
        """The tarantool process id on the host while started, else None."""
        return self._proc["pid"] if self._proc else None

    @property
    def uri(self) -> str:
        """``host:port`` for clients on the master (asynctnt, net.box)."""
        return self._uri or self._client_uri(self.listen) or str(self.listen)

    def _client_uri(self, listen: Any) -> Optional[str]:
        address, port = split_listen(listen)
        if not port:
            return None
        if address is None or address in _ANY_ADDRESS:
            address = self._facts()["address"]
        if ":" in address:  # IPv6
            address = "[%s]" % address
        return "%s:%d" % (address, port)

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def _paths(self) -> Dict[str, str]:
        ctl = "%s/tt-%s" % (self.on.info["run_dir"], self.instance_uuid[:8])
        work = self.work_dir or ctl
        return {
            "ctl": ctl,
            "work": work,
            "probe": ctl + "/probe.sock",
            "notify": ctl + "/notify.sock",
            "log": work.rstrip("/") + "/" + LOG_FILE,
        }

    # -- start -------------------------------------------------------------

    def _listen(self) -> Any:
        """What box.cfg.listen gets: :attr:`listen`, with port 0 fixed after the first start."""
        return self._bound_listen or self.listen

    def _init_lua(self, paths: Mapping[str, str]) -> str:
        user_box_cfg = dict(self.box_cfg)
        if (
            self._down_peers
            and self.version < (2, 11, 0)
            and "replication_connect_quorum" not in user_box_cfg
        ):
            # Before 2.11 the quorum defaults to every peer: with one down the
            # member would stay 'orphan'. Ask only for the ones that run.
            user_box_cfg["replication_connect_quorum"] = len(self._replication) - len(
                self._down_peers
            )
        cfg = box_cfg_for(
            self.version,
            listen=self._listen(),
            work_dir=paths["work"],
            replication=self._replication,
            read_only=self.read_only,
            replication_timeout=self._replication_timeout,
            instance_uuid=self.instance_uuid,
            replicaset_uuid=self._replicaset_uuid,
            user_box_cfg=user_box_cfg,
        )
        return render_init_lua(
            box_cfg=cfg,
            probe_socket=paths["probe"],
            app_lua=self.app_lua,
            replication_user=self._replication_user,
            password_env=PASSWORD_ENV if self.password is not None else None,
        )

    def _prepare(self, deadline: float) -> None:
        """Check the work directory, write init.lua and bind the notify socket on the target."""
        self._facts(deadline)
        paths = self._paths()
        init_lua = self._init_lua(paths)
        try:
            self.on.invoke(
                TARGET + "prepare_instance",
                paths["ctl"],
                paths["work"],
                init_lua,
                paths["notify"],
                reply_timeout=max(0.1, deadline - time.monotonic()) + SLACK,
            )
        except RemoteExecError as e:
            raise renamed(e, self.name, member=self.name) from None

    def _launch(self, deadline: float, abort: Optional[threading.Event] = None) -> None:
        """Start the process (after :meth:`_prepare`); do not wait for readiness.

        ``abort`` set while the spawn was on its way (a replica set gave up):
        the process is killed again at once and TarantoolError raised, so a
        late spawn never outlives the set's cleanup.
        """
        paths = self._paths()
        env: Dict[str, str] = dict(self.env)
        env["NOTIFY_SOCKET"] = paths["notify"]
        if self.password is not None:
            env[PASSWORD_ENV] = self.password
        address, port = split_listen(self._listen())
        pre_check = []
        if port:
            if address is None or address in _ANY_ADDRESS:
                address = "127.0.0.1"
            pre_check = [{"kind": "tcp", "host": address, "port": port}]
        left = max(0.1, deadline - time.monotonic())
        try:
            self._proc = self.on.service(
                "start",
                reply_timeout=left + SLACK,
                spec={
                    "command": [self.tarantool, paths["ctl"] + "/init.lua"],
                    "cwd": paths["ctl"],
                    "env": env,
                    "name": "tarantool-" + self.instance_uuid[:8],
                    "stop_signal": int(signal.SIGTERM),
                },
                check_specs=[],
                timeout=left,
                pre_check_specs=pre_check,
            )
        except RemoteExecError as e:
            raise renamed(e, self.name) from None
        self._output_log = self._proc["log_path"]
        self._paused = False
        if abort is not None and abort.is_set():
            self._forget(kill=True, only=self._proc)
            raise TarantoolError("%s: start abandoned" % self.name, host=self.on.name)

    def _wait(self, deadline: float, with_notify: bool = True) -> Dict[str, float]:
        """Wait for every readiness layer; on failure kill the process and raise."""
        proc = self._proc
        if proc is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        paths = self._paths()
        left = max(0.05, deadline - time.monotonic())
        try:
            ready = self.on.invoke(
                TARGET + "wait_instance",
                paths["probe"],
                proc["pid"],
                left,
                paths["notify"] if with_notify else None,
                self.read_only,
                self.instance_uuid,
                [p for p in self._peers if p[0] not in self._down_peers],
                [paths["log"], proc["log_path"]],
                reply_timeout=left + SLACK,
            )
        except RemoteExecError as e:
            extra: Dict[str, Any] = {}
            if e.details.get("layer") == "alive":
                # Reap it now; the supervisor knows the exit code even if /proc forgot it.
                code = self._forget(kill=True, only=proc)
                if e.exit_code is None and code is not None:
                    extra["exit_code"] = code
            raise renamed(e, self.name, member=self.name, **extra) from None
        # box.info.listen has the real port when listen asked for port 0.
        bound = ready["status"].get("listen")
        self._uri = self._client_uri(bound)
        address, port = split_listen(self.listen)
        _, bound_port = split_listen(bound)
        if port == 0 and bound_port and self._bound_listen is None:
            if address is None:
                self._bound_listen = str(bound_port)
            else:
                host = "[%s]" % address if ":" in address else address
                self._bound_listen = "%s:%d" % (host, bound_port)
        return ready["timings"]

    def start(self) -> TarantoolInstance:
        """Start it and return once ready: alive, running (not orphan or loading),
        ``box.info.ro`` as intended and, in a replica set, every link 'follow'.

        All within ``timeout``. Raises AlreadyRunning (the port is taken),
        TarantoolError (tarantool exited: its F>/E> lines are in the message
        and ``output_tail``), TimeoutExpired (``details['layer']`` names the
        layer not reached) or CommandNotFound; nothing is left running then.
        """
        if self._proc is not None:
            return self
        self._start()
        return self

    def _start(self, abort: Optional[threading.Event] = None) -> None:
        """:meth:`start`'s work; ``abort`` as in :meth:`_launch`."""
        deadline = time.monotonic() + self.timeout
        self._prepare(deadline)
        self._launch(deadline, abort)
        proc = self._proc
        try:
            self._wait(deadline)
        except BaseException:
            self._forget(kill=True, only=proc)
            raise

    # -- stop --------------------------------------------------------------

    def _forget(self, kill: bool, only: Optional[Dict[str, Any]] = None) -> Optional[int]:
        """Kill (if asked) and drop the process; errors are ignored. Returns its exit code.

        ``only``: just if that is still the process. A wait a replica set gave
        up on ends later by itself, and must not kill a newer process then.
        """
        with self._proc_lock:
            proc = self._proc
            if only is not None and proc is not only:
                return None
            self._proc, self._paused = None, False
        if proc is None or not kill:
            return None
        try:
            return self.on.service("kill", proc_id=proc["id"], sig=int(signal.SIGKILL))[
                "returncode"
            ]
        except RemoteExecError:
            return None

    def stop(self) -> TarantoolInstance:
        """SIGTERM (a clean shutdown), SIGKILL after ``min(timeout, 10)`` seconds."""
        if self._proc is None:
            return self
        proc = self._proc
        if self._paused:
            self.signal(signal.SIGCONT)
        self._proc, self._paused = None, False
        stop_timeout = min(self.timeout, 10.0)
        try:
            self.on.service(
                "stop",
                reply_timeout=stop_timeout + SLACK,
                proc_id=proc["id"],
                sig=int(signal.SIGTERM),
                timeout=stop_timeout,
                expected_returncode=0,
            )
        except RemoteExecError as e:
            raise renamed(e, self.name) from None
        return self

    def kill(self) -> TarantoolInstance:
        """SIGKILL: no shutdown at all, as in a crash. The data stays for a restart."""
        if self._proc is not None:
            proc, self._proc, self._paused = self._proc, None, False
            self.on.service("kill", proc_id=proc["id"], sig=int(signal.SIGKILL))
        return self

    def restart(self) -> TarantoolInstance:
        """Stop, then start again on the same data (same instance uuid)."""
        return self.stop().start()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the tarantool process (SIGSTOP and SIGCONT track :attr:`paused`)."""
        if self._proc is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        self.on.service("signal", proc_id=self._proc["id"], sig=int(sig))
        if sig == signal.SIGSTOP:
            self._paused = True
        elif sig == signal.SIGCONT:
            self._paused = False

    # -- calls -------------------------------------------------------------

    def _probe(self, function: str, *args: Any, timeout: Optional[float] = None) -> Any:
        wait = self.timeout if timeout is None else seconds("timeout", timeout)
        if self._proc is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        try:
            return self.on.invoke(
                TARGET + function,
                self._paths()["probe"],
                *args,
                wait,
                reply_timeout=wait + SLACK,
            )
        except RemoteExecError as e:
            raise renamed(e, self.name, lua_message=e.message) from None

    def eval(self, lua: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Run Lua source inside the instance (on the target); ``args`` arrive as ``...``.

        Returns None for no value, the value for one, a tuple for several. A
        Lua error raises TarantoolError; ``details['lua_message']`` is the
        Lua message as is.
        """
        values = self._probe("probe", lua, list(args), timeout=timeout)["result"]
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def call(self, function: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Call the Lua function ``function`` (e.g. ``"box.space.test:select"``) with ``args``."""
        return self.eval(call_source(function), *args, timeout=timeout)

    def info(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``box.info`` as plain data (see :func:`remoteexec.target.tarantool.box_status`).

        Never holds the replication URIs, so never the password.
        """
        return self._probe("box_status", timeout=timeout)

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of tarantool's log on the host."""
        path = self._paths()["log"]
        return str(self.on.invoke("remoteexec.target.supervisor._tail_of", path, lines))

    def _artifacts(self) -> Dict[str, str]:
        """Paths on the target worth copying when something failed."""
        paths = self._paths()
        found = {"tarantool.log": paths["log"], "init.lua": paths["ctl"] + "/init.lua"}
        if self._output_log:
            found["output.log"] = self._output_log
        return found

    def _configure_replication(
        self,
        *,
        name: str,
        replication: Sequence[str],
        peers: Sequence[Sequence[str]],
        read_only: bool,
        replication_timeout: Optional[float],
        replicaset_uuid: str,
        user: str,
    ) -> None:
        """Make it a replica set member (called by ReplicaSet before the first start)."""
        self.name = name
        self._replication = list(replication)
        self._peers = [list(p) for p in peers]
        self.read_only = read_only
        self._replication_timeout = replication_timeout
        self._replicaset_uuid = replicaset_uuid
        self._replication_user = user
