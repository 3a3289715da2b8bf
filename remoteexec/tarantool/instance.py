"""TarantoolInstance: one tarantool process on a host, a Service built on an executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
)

from remoteexec.arguments import environment
from remoteexec.errors import HostLost, RemoteExecError, TarantoolError, TimeoutExpired
from remoteexec.executors import SimpleExecutor
from remoteexec.services import Deferred, ServiceStatus, resolve
from remoteexec.tarantool import remote
from remoteexec.tarantool.config import LOG_FILE, PASSWORD_ENV, box_cfg_for, render_init_lua
from remoteexec.tarantool.lua import call_source
from remoteexec.tarantool.shared import (
    ANY_ADDRESS,
    SLACK,
    bound_seconds,
    check_listen,
    renamed,
    secret,
    split_listen,
    stop_on_exit,
)
from remoteexec.tarantool.version import Features, Version
from remoteexec.target.files import write_private
from remoteexec.waits import TCP

if TYPE_CHECKING:
    from remoteexec.host import Host

__all__ = ["LAYERS", "TarantoolInstance", "TarantoolProcess", "checked_env"]

#: Readiness layers in order, as ``status()["readiness"]`` names the last one reached.
LAYERS = ("process", "running", "app", "ro", "mesh", "ready")
# host -> {tarantool path -> host_facts()}: one `tarantool --version` per host.
_FACTS: weakref.WeakKeyDictionary[Host, Dict[str, Dict[str, Any]]] = weakref.WeakKeyDictionary()
_FACTS_LOCK = threading.Lock()
# box.info for an artifact dump: its reply comes within this plus SLACK.
ARTIFACT_INFO_TIMEOUT = 1.0


def checked_env(name: str, env: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``env`` as a dict, checked as :func:`remoteexec.arguments.environment` does;
    a :class:`~remoteexec.services.Deferred` value is kept, checked once resolved."""
    given = dict(env or {})
    plain = {k: ("" if isinstance(v, Deferred) else v) for k, v in given.items()}
    environment(name, plain)
    return given


class TarantoolProcess(SimpleExecutor):
    """The tarantool process's lifecycle (spawn, logs, stop, kill) as an executor.

    Readiness is not the executor's: :class:`TarantoolInstance` waits for its
    layers itself. Before the spawn, ``refuse_if`` (the instance's TCP port)
    must not answer: AlreadyRunning with the owner's pid otherwise.
    """

    def __init__(
        self,
        command: List[str],
        *,
        refuse_if: Optional[TCP],
        start_bound: float,
        stop_bound: Callable[[], float],
        **kwargs: Any,
    ) -> None:
        self.refuse_if = refuse_if
        self.start_bound = start_bound
        self.stop_bound = stop_bound
        super().__init__(command, timeout=start_bound, **kwargs)

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        # SimpleExecutor's documented hook (the executors have no public
        # pre-check-only argument yet).
        return self.refuse_if.specs() if self.refuse_if is not None else []

    def _within(self, what: str, bound: float, call: Callable[[], Any]) -> None:
        """``call()``, but give up waiting for the host's answer ``SLACK`` seconds
        after ``bound`` (a hung host): TimeoutExpired, as for every other call
        of an instance. The executors wait REPLY_SLACK (30 s) for a reply."""
        outcome: Dict[str, BaseException] = {}
        done = threading.Event()

        def run() -> None:
            try:
                call()
            except BaseException as e:  # handed to the caller below
                outcome["error"] = e
            finally:
                done.set()

        threading.Thread(target=run, name="remoteexec-tt-" + what, daemon=True).start()
        if not done.wait(bound + SLACK):
            raise TimeoutExpired(
                "no reply to %s within %.1fs" % (what, bound + SLACK), host=self.on.name
            )
        if "error" in outcome:
            raise outcome["error"]

    def start(self) -> TarantoolProcess:
        """Spawn (after the port check); its reply bounded by the start's time left."""
        self._within("start", self.start_bound, super().start)
        return self

    def stop(
        self, stop_signal: Optional[int] = None, expected_returncode: Optional[int] = None
    ) -> TarantoolProcess:
        """Stop as SimpleExecutor does, with the stop bound the instance has now
        (a test may shorten ``TarantoolInstance.timeout`` after start); its
        reply bounded as :meth:`start`'s."""
        # The executors take stop_timeout only in their constructor.
        self._stop_timeout = bound = self.stop_bound()
        base_stop = super().stop
        self._within("stop", bound, lambda: base_stop(stop_signal, expected_returncode))
        return self


class TarantoolInstance:
    """One tarantool instance on a host, under the host's supervisor; a
    :class:`~remoteexec.services.Service`.

    It inherits every cleanup guarantee of the supervisor: it dies with the
    master (closed, crashed or SIGKILLed) and with a silent partition.

    :param on: the Host (None: this machine, through the default master).
    :param listen: ``"10.20.0.11:3301"``, ``"127.0.0.1:0"`` (any free port;
        :attr:`uri` has the real one after start, and restarts reuse that
        port), a port number or a unix socket path; a port outside 0-65535
        is a ValueError.
    :param box_cfg: extra ``box.cfg`` keys; they win over the test-friendly
        defaults of :func:`~remoteexec.tarantool.config.box_cfg_for`; a key
        set to None removes a default. Values may be Deferred.
    :param app_lua: Lua source run after ``box.cfg`` (schema, functions).
    :param app_params: values for the app, readable in Lua as the global
        table ``params`` (``params.port``), set before ``box.cfg``; plain
        values or Deferred ones (resolved at start). Never put a secret here:
        it is written into init.lua.
    :param work_dir: data directory on the target; None: a fresh directory in
        the run's directory, removed when the master closes. Data already there
        must belong to this instance: set :attr:`instance_uuid` to its uuid.
    :param tarantool: the binary on the target.
    :param user: a user to create (with ``password``) and grant 'replication'.
    :param password: its password; held as :class:`mitogen.core.Secret` and
        passed to the process in its environment only.
    :param env: extra environment variables for the tarantool process (str
        or Deferred values resolving to str; anything else is a TypeError
        naming the variable, here or at start).
    :param timeout: seconds for start (all layers together), stop and calls;
        finite and positive (every wait is bounded), else a ValueError.

    Deferred values (``env``, ``box_cfg``, ``app_params``) are resolved with
    :func:`remoteexec.services.resolve` at the start of every :meth:`start`.
    """

    def __init__(
        self,
        *,
        on: Optional[Host] = None,
        listen: Any,
        box_cfg: Optional[Mapping[str, Any]] = None,
        app_lua: str = "",
        app_params: Optional[Mapping[str, Any]] = None,
        work_dir: Optional[str] = None,
        tarantool: str = "tarantool",
        user: Optional[str] = None,
        password: Optional[str] = None,
        env: Optional[Mapping[str, Any]] = None,
        timeout: float = 30,
    ) -> None:
        self.timeout = bound_seconds("timeout", timeout)
        self._on = on
        self.listen = check_listen("listen", listen, allow_zero=True)
        self.env: Dict[str, Any] = checked_env("env", env)
        self.box_cfg: Dict[str, Any] = dict(box_cfg or {})
        self.app_lua = app_lua
        self.app_params: Dict[str, Any] = dict(app_params or {})
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
        #: uuids of peers that are down: readiness waits skip them (see ReplicaSet.restart).
        self.down_peers: frozenset[str] = frozenset()
        # Set by join_replicaset: replication URIs, [uuid, name, uri] of the peers.
        self._replication: List[str] = []
        self._peers: List[List[str]] = []
        self._replication_user: Optional[str] = user
        self._replication_timeout: Optional[float] = None
        #: Set by ReplicaSet.start for a first start: the retry interval
        #: (``replication_timeout``) of the bootstrap, until :meth:`end_bootstrap`
        #: puts the configured one back (see ReplicaSet.start).
        self.boot_interval: Optional[float] = None
        # Whether this start's init.lua has the boot interval (end_bootstrap then ends it).
        self._booting = False
        self._replicaset_uuid: Optional[str] = None
        # The executor of the running process (None: stopped) and of the last one (its logs).
        self._process: Optional[TarantoolProcess] = None
        self._last: Optional[TarantoolProcess] = None
        # Guards forget's compare-and-drop of _process (see forget's ``only``).
        self._proc_lock = threading.Lock()
        self._paused = False
        self._uri: Optional[str] = None
        self._output_log: Optional[str] = None
        # listen with port 0 replaced by the port the first start got: restarts keep it.
        self._bound_listen: Optional[str] = None
        # The inputs resolved by the current start (env, box_cfg, app_params).
        self._resolved: Dict[str, Dict[str, Any]] = {}
        self._state = "stopped"
        self._since = time.time()
        self._readiness: Optional[str] = None
        self._exit_code: Optional[int] = None

    def __repr__(self) -> str:
        state = "running" if self._process else "stopped"
        return "<TarantoolInstance %s %s on %s>" % (self.name, state, self.on.name)

    def __enter__(self) -> TarantoolInstance:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        stop_on_exit(self.stop, exc[0])

    # -- facts -------------------------------------------------------------

    @property
    def on(self) -> Host:
        """The Host it runs on."""
        from remoteexec.master import host_or_default

        self._on = host_or_default(self._on)
        return self._on

    @property
    def hosts(self) -> List[Host]:
        """The hosts it runs on: ``[on]`` (the Service interface)."""
        return [self.on]

    def host_facts(self, deadline: Optional[float] = None) -> Dict[str, Any]:
        """Version and address of the host (one call per host and binary, then cached).

        With ``deadline`` (a start's), the call fits in the time left.
        ``address`` is the address other hosts reach it on.
        """
        with _FACTS_LOCK:
            facts = _FACTS.get(self.on, {}).get(self.tarantool)
        if facts is None:
            left = 10.0 if deadline is None else max(0.1, deadline - time.monotonic())
            facts = remote.host_facts(
                self.on, path=self.tarantool, timeout=min(10.0, left), reply_timeout=left + SLACK
            )
            if self.on.is_local or not facts.get("address"):
                facts["address"] = "127.0.0.1"
            with _FACTS_LOCK:
                _FACTS.setdefault(self.on, {})[self.tarantool] = facts
        return facts

    @property
    def version(self) -> Version:
        """The tarantool version on the host, e.g. ``(2, 6, 0)``."""
        major, minor, patch = self.host_facts()["version"]
        return (major, minor, patch)

    @property
    def features(self) -> Features:
        """What the tarantool on the host supports."""
        return Features.for_version(self.version)

    @property
    def pid(self) -> Optional[int]:
        """The tarantool process id on the host while started, else None."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def uri(self) -> str:
        """``host:port`` for clients on the master (asynctnt, net.box)."""
        return self._uri or self._client_uri(self.listen) or str(self.listen)

    def _client_uri(self, listen: Any) -> Optional[str]:
        address, port = split_listen(listen)
        if not port:
            return None
        if address is None or address in ANY_ADDRESS:
            address = str(self.host_facts()["address"])
        if ":" in address:  # IPv6
            address = "[%s]" % address
        return "%s:%d" % (address, port)

    @property
    def endpoints(self) -> Dict[str, Optional[str]]:
        """``{"uri", "host", "port"}`` as other hosts reach it; None while not known
        (port 0 before the first start, a unix socket)."""
        uri = self._uri or self._client_uri(self._listen())
        if uri is None:
            return {"uri": None, "host": None, "port": None}
        host, port = split_listen(uri)
        return {"uri": uri, "host": host, "port": None if port is None else str(port)}

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

    @property
    def probe_socket(self) -> str:
        """The unix socket of its probe server, on the host."""
        return self._paths()["probe"]

    # -- the Service interface ----------------------------------------------

    def inputs(self) -> List[Any]:
        """The values that may hold Deferred references: env, box_cfg, app_params."""
        return [self.env, self.box_cfg, self.app_params]

    def running(self) -> bool:
        """Whether the tarantool process runs now (asks the host)."""
        process = self._process
        return process is not None and process.running()

    def _set_state(self, state: str, readiness: Optional[str] = None) -> None:
        self._state, self._readiness, self._since = state, readiness, time.time()

    def status(self) -> ServiceStatus:
        """State, readiness layer reached (:data:`LAYERS`), pid, since, exit code, endpoints.

        A process that ended by itself since start is ``exited`` with its exit code.
        """
        state, process = self._state, self._process
        if process is not None and state == "ready" and process.process is not None:
            code = process.process.poll()
            if code is not None:
                self._exit_code = code
                self._set_state("exited")
                state = "exited"
        return {
            "name": self.name,
            "hosts": [self.on.name],
            "state": "running" if state == "ready" and self._paused else state,
            "readiness": "paused" if self._paused else self._readiness,
            "pids": [process.pid] if process is not None and process.pid is not None else [],
            "since": self._since,
            "exit_code": self._exit_code,
            "endpoints": self.endpoints,
        }

    # -- start -------------------------------------------------------------

    def _listen(self) -> Any:
        """What box.cfg.listen gets: :attr:`listen`, with port 0 fixed after the first start."""
        return self._bound_listen or self.listen

    def _resolve_inputs(self) -> None:
        """Resolve the Deferred inputs for this start and check them (env values str)."""
        env = resolve(self.env)
        environment("env", env)
        self._resolved = {
            "env": env,
            "box_cfg": resolve(self.box_cfg),
            "app_params": resolve(self.app_params),
        }

    def _init_lua(self, paths: Mapping[str, str]) -> str:
        user_box_cfg = dict(self._resolved["box_cfg"])
        if (
            self.down_peers
            and not self.features.bootstrap_strategy
            and "replication_connect_quorum" not in user_box_cfg
        ):
            # Before bootstrap_strategy (2.11) the quorum defaults to every peer:
            # with one down the member would stay 'orphan'. Ask only for the ones that run.
            user_box_cfg["replication_connect_quorum"] = len(self._replication) - len(
                self.down_peers
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
        # A first bootstrap retries its peers every boot_interval (see
        # ReplicaSet.start). Before 2.11 only: its bootstrap was not measured.
        timeout = cfg.get("replication_timeout")
        self._booting = bool(
            self.boot_interval is not None
            and not self.features.bootstrap_strategy
            and cfg.get("replication")
            and isinstance(timeout, (int, float))
            and not isinstance(timeout, bool)
            and self.boot_interval < timeout
        )
        return render_init_lua(
            box_cfg=cfg,
            probe_socket=paths["probe"],
            app_lua=self.app_lua,
            replication_user=self._replication_user,
            password_env=PASSWORD_ENV if self.password is not None else None,
            app_params=self._resolved["app_params"],
            boot_interval=self.boot_interval if self._booting else None,
        )

    def prepare(self, deadline: float) -> None:
        """The first step of a start: resolve the inputs, check the work directory,
        write init.lua and bind the notify socket on the host (nothing runs yet)."""
        self._set_state("starting")
        self._exit_code = None
        try:
            self._resolve_inputs()
            self.host_facts(deadline)
            paths = self._paths()
            init_lua = self._init_lua(paths)
        except BaseException:
            self._set_state("failed")
            raise
        try:
            remote.prepare_instance(
                self.on,
                ctl_dir=paths["ctl"],
                work_dir=paths["work"],
                init_lua=init_lua,
                notify_socket=paths["notify"],
                reply_timeout=max(0.1, deadline - time.monotonic()) + SLACK,
            )
        except RemoteExecError as e:
            self._set_state("failed")
            raise renamed(e, self.name, member=self.name) from None

    def _executor(self, left: float) -> TarantoolProcess:
        paths = self._paths()
        env: Dict[str, str] = dict(self._resolved.get("env") or {})
        env["NOTIFY_SOCKET"] = paths["notify"]
        if self.password is not None:
            env[PASSWORD_ENV] = self.password
        address, port = split_listen(self._listen())
        refuse_if = None
        if port:
            if address is None or address in ANY_ADDRESS:
                address = "127.0.0.1"
            refuse_if = TCP(address, port)
        return TarantoolProcess(
            [self.tarantool, paths["ctl"] + "/init.lua"],
            refuse_if=refuse_if,
            on=self.on,
            cwd=paths["ctl"],
            envvars=env,
            name="tarantool-" + self.instance_uuid[:8],
            stop_signal=signal.SIGTERM,
            stdin=subprocess.DEVNULL,
            start_bound=left,
            stop_bound=lambda: min(self.timeout, 10.0),
            strict_stop=True,
            expected_returncode=0,
        )

    def launch(self, deadline: float, abort: Optional[threading.Event] = None) -> None:
        """Start the process (after :meth:`prepare`); do not wait for readiness.

        ``abort`` set while the spawn was on its way (a replica set gave up):
        the process is killed again at once and TarantoolError raised, so a
        late spawn never outlives the set's cleanup.
        """
        process = self._executor(max(0.1, deadline - time.monotonic()))
        # The previous process's executor goes now (it forgets its log on the host).
        self._last, self._output_log = process, None
        try:
            process.start()
        except RemoteExecError as e:
            self._set_state("failed")
            raise renamed(e, self.name) from None
        self._process = process
        self._output_log = process.log_path
        self._paused = False
        self._set_state("starting", "process")
        if abort is not None and abort.is_set():
            self.forget(kill=True, only=process)
            raise TarantoolError("%s: start abandoned" % self.name, host=self.on.name)

    def wait_ready(self, deadline: float, with_notify: bool = True) -> Dict[str, float]:
        """Wait for every readiness layer (after :meth:`launch`); on failure kill the
        process and raise. Returns the seconds each layer took."""
        process = self._process
        if process is None or process.pid is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        paths = self._paths()
        left = max(0.05, deadline - time.monotonic())
        try:
            ready = remote.wait_instance(
                self.on,
                probe_socket=paths["probe"],
                pid=process.pid,
                timeout=left,
                notify_socket=paths["notify"] if with_notify else None,
                read_only=self.read_only,
                instance_uuid=self.instance_uuid,
                peers=[p for p in self._peers if p[0] not in self.down_peers],
                log_paths=[paths["log"], str(self._output_log)],
                reply_timeout=left + SLACK,
            )
        except RemoteExecError as e:
            extra: Dict[str, Any] = {}
            layer = e.details.get("layer")
            if layer == "alive":
                # Reap it now; the supervisor knows the exit code even if /proc forgot it.
                code = self.forget(kill=True, only=process)
                if e.exit_code is None and code is not None:
                    extra["exit_code"] = code
            reached = LAYERS.index(layer) - 1 if layer in LAYERS[1:] else 0
            self._set_state("failed", LAYERS[reached])
            self._exit_code = extra.get("exit_code", e.exit_code)
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
        self._set_state("ready", "ready")
        timings: Dict[str, float] = ready["timings"]
        return timings

    def start(self, abort: Optional[threading.Event] = None) -> TarantoolInstance:
        """Start it and return once ready: alive, running (not orphan or loading),
        ``box.info.ro`` as intended and, in a replica set, every link 'follow'.

        All within ``timeout``. Raises AlreadyRunning (the port is taken),
        TarantoolError (tarantool exited: its F>/E> lines are in the message
        and ``output_tail``), TimeoutExpired (``details['layer']`` names the
        layer not reached) or CommandNotFound; nothing is left running then.
        ``abort``: as in :meth:`launch` (a replica set's restart sets it when
        it gives up).
        """
        if self._process is not None:
            return self
        deadline = time.monotonic() + self.timeout
        self.prepare(deadline)
        self.launch(deadline, abort)
        process = self._process
        try:
            self.wait_ready(deadline)
        except BaseException:
            self.forget(kill=True, only=process)
            raise
        return self

    # -- stop --------------------------------------------------------------

    def forget(self, kill: bool, only: Optional[TarantoolProcess] = None) -> Optional[int]:
        """Count it as stopped, SIGKILLing the process first if ``kill``; errors are
        ignored (a lost host kills it itself). Returns its exit code when known.

        ``only``: just if that is still the process. A wait a replica set gave
        up on ends later by itself, and must not kill a newer process then.
        """
        with self._proc_lock:
            process = self._process
            if only is not None and process is not only:
                return None
            self._process, self._paused = None, False
        if process is None:
            return None
        if self._state in ("starting", "ready"):
            self._set_state("stopped", self._readiness)
        if not kill:
            return None
        handle = process.process
        try:
            process.kill()
            return handle.poll() if handle is not None else None
        except RemoteExecError:
            return None

    def stop(self) -> TarantoolInstance:
        """SIGTERM (a clean shutdown), SIGKILL after ``min(timeout, 10)`` seconds."""
        process = self._process
        if process is None:
            return self
        if self._paused:
            self.signal(signal.SIGCONT)
        self._process, self._paused = None, False
        self._set_state("stopped")
        try:
            process.stop()
        except RemoteExecError as e:
            raise renamed(e, self.name) from None
        return self

    def kill(self) -> TarantoolInstance:
        """SIGKILL: no shutdown at all, as in a crash. The data stays for a restart."""
        process = self._process
        if process is not None:
            self._process, self._paused = None, False
            self._set_state("stopped")
            process.kill()
        return self

    def restart(self) -> TarantoolInstance:
        """Stop, then start again on the same data (same instance uuid)."""
        return self.stop().start()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the tarantool process (SIGSTOP and SIGCONT track :attr:`paused`)."""
        process = self._process
        handle = process.process if process is not None else None
        if handle is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        handle.send_signal(int(sig))
        if sig == signal.SIGSTOP:
            self._paused = True
        elif sig == signal.SIGCONT:
            self._paused = False

    # -- calls -------------------------------------------------------------

    def _bound(self, timeout: Optional[float]) -> float:
        """The call's bound; a bad one is refused before the "not started" check."""
        wait = self.timeout if timeout is None else bound_seconds("timeout", timeout)
        if self._process is None:
            raise TarantoolError("%s: not started" % self.name, host=self.on.name)
        return wait

    def eval(self, lua: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Run Lua source inside the instance (on the target); ``args`` arrive as ``...``.

        Returns None for no value, the value for one, a tuple for several. A
        Lua error raises TarantoolError; ``details['lua_message']`` is the
        Lua message as is.
        """
        wait = self._bound(timeout)
        try:
            values = remote.eval_lua(
                self.on,
                socket_path=self.probe_socket,
                lua=lua,
                args=args,
                timeout=wait,
                reply_timeout=wait + SLACK,
            )
        except RemoteExecError as e:
            raise renamed(e, self.name, lua_message=e.message) from None
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
        wait = self._bound(timeout)
        try:
            return remote.box_status(
                self.on, socket_path=self.probe_socket, timeout=wait, reply_timeout=wait + SLACK
            )
        except RemoteExecError as e:
            raise renamed(e, self.name, lua_message=e.message) from None

    @property
    def booting(self) -> bool:
        """Whether this start runs the boot values (:attr:`boot_interval`)
        until :meth:`end_bootstrap`."""
        return self._booting

    def end_bootstrap(self, timeout: Optional[float] = None) -> None:
        """After a start with :attr:`boot_interval`: the configured
        ``replication_timeout`` from now on (nothing when the start had none,
        or found data and so did not bootstrap)."""
        if self._booting:
            self.eval(
                "local f = rawget(_G, 'rx_end_bootstrap') if f ~= nil then f() end",
                timeout=timeout,
            )
        self._booting = False

    def wait_vclock(self, target: Dict[int, int], timeout: float) -> None:
        """Wait until its vclock has every component of ``target`` (but 0), within ``timeout``."""
        remote.wait_vclock(
            self.on,
            probe_socket=self.probe_socket,
            target=target,
            timeout=timeout,
            reply_timeout=timeout + SLACK,
        )

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of tarantool's log on the host."""
        return remote.tail_lines(
            self.on, path=self._paths()["log"], lines=lines, reply_timeout=10.0 + SLACK
        )

    def artifact_paths(self) -> Dict[str, str]:
        """Files on the host worth copying when something failed, by the name to copy them to."""
        paths = self._paths()
        found = {"tarantool.log": paths["log"], "init.lua": paths["ctl"] + "/init.lua"}
        if self._output_log:
            found["output.log"] = self._output_log
        return found

    def artifacts(self, dest: str) -> List[str]:
        """Copy its log, output, init.lua and a ``box.info`` dump (``box_info.json``)
        into ``dest`` on the master (files 0600, the directory 0700).

        Works on a stopped or failed instance too (the files stay on the host
        until the master closes). A file that cannot be read (the host is
        lost, say) is skipped and its error recorded under ``"errors"`` in
        ``box_info.json``. Returns the paths written.
        """
        os.makedirs(dest, 0o700, exist_ok=True)
        written = []
        errors: Dict[str, str] = {}
        # Set when the host did not answer: the rest is skipped, not waited for.
        silent: Optional[str] = None
        for name, path in self.artifact_paths().items():
            if silent:
                errors[name] = "%s: skipped: %s" % (path, silent)
                continue
            try:
                data = remote.read_file(self.on, path=path, reply_timeout=5.0)
            except RemoteExecError as e:
                errors[name] = "%s: %s" % (path, e.message)
                if isinstance(e, (TimeoutExpired, HostLost)):
                    silent = e.message
                continue
            if data is not None:
                written.append(write_private(os.path.join(dest, name), data))
        info: Any = None
        if silent:
            info = {"error": "skipped: %s" % silent}
        elif self.pid and not self.paused:
            try:
                info = self.info(timeout=ARTIFACT_INFO_TIMEOUT)
            except RemoteExecError as e:
                info = {"error": e.message}
        dump: Dict[str, Any] = {
            "member": self.name,
            "host": self.on.name,
            "uri": self.uri,
            "pid": self.pid,
            "box_info": info,
        }
        if errors:
            dump["errors"] = errors
        text = json.dumps(dump, indent=2, sort_keys=True, default=str).encode()
        written.append(write_private(os.path.join(dest, "box_info.json"), text))
        return written

    # -- replica set membership ---------------------------------------------

    def join_replicaset(
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
        """Make it a replica set member (a ReplicaSet calls this before the first start):
        its name, the replication URIs, its peers as [uuid, name, uri] and its role."""
        self.name = name
        self._replication = list(replication)
        self._peers = [list(p) for p in peers]
        self.read_only = read_only
        self._replication_timeout = replication_timeout
        self._replicaset_uuid = replicaset_uuid
        self._replication_user = user
