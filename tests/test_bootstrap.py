"""Context bootstrap: the bytecode cache, lazy feature modules, the kex option.

The cache tests run on a lab host with a directory of their own under the
host's private home, so they see only what their own masters left there.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import marshal
import os
import pwd
import signal
import stat
import sys
import uuid
from typing import Any, Dict, List

import mitogen.parent
import pytest
from conftest import connect_options, left_nothing, spawn_master_script, wait_until
from helpers import oracle

import remoteexec as rx
from remoteexec.connectors import coreboot
from remoteexec.host import bootstrap_manifest, eager_modules
from remoteexec.target import bytecache

pytestmark = pytest.mark.lab

SUPERVISOR = "remoteexec.target.supervisor"
PROTOCOL = "remoteexec.target.protocol"
GUARD_STATUS = "remoteexec.target.guardlink.status"
#: Bound for processes to go once their context (or master) is SIGKILLed, under load.
SETTLE = 15.0


def _cache_dir() -> str:
    return "~/.cache/remoteexec/test-%s" % uuid.uuid4().hex[:8]


def _outside(lab: Any, directory: str) -> str:
    """The lab host's cache directory, as seen from the master's machine."""
    home = pwd.getpwnam(lab.user).pw_dir
    return lab.hosts[0].path(directory.replace("~", home, 1))


def _file(lab: Any, directory: str, module: str) -> str:
    entry = next(e for e in bootstrap_manifest() if e[0] == module)
    return os.path.join(_outside(lab, directory), bytecache.key(entry[0], entry[1], entry[2]))


def _connect(lab: Any, directory: str) -> Dict[str, Any]:
    """Connect a fresh master to the first host; what its cache did there."""
    with rx.Master(heartbeat_timeout=5, bytecode_cache=directory) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        assert host.run(["true"]).returncode == 0, "the supervisor works"
        # The guard (started with that first process) is fed its modules'
        # sources: from the cache file on a hit.
        guard = host.invoke("remoteexec.target.guardlink.status")
        assert guard["pid"] and guard["error"] is None
        done: Dict[str, Any] = host.call(bytecache.report)
        done["primed"] = host.info["bytecode_cache"]
        responder = master.router.responder
        done["requests"] = responder.get_module_count  # import round trips
        done["shipped"] = responder.good_load_module_count
        return done


def test_a_second_master_loads_the_target_modules_from_the_cache(lab) -> None:
    directory = _cache_dir()
    first = _connect(lab, directory)
    assert first["primed"]["cached"] == 0
    assert SUPERVISOR in first["misses"] and not first["hits"]
    second = _connect(lab, directory)
    assert SUPERVISOR in second["hits"] and PROTOCOL in second["hits"]
    assert "mitogen.service" in second["hits"], "mitogen's minified modules are cached too"
    assert second["misses"] == [] and second["refused"] == []
    # Cold, the master sends every module install imports compiled, in one
    # reply to prime: nothing compiled on the host, no import round trip;
    # warm, nothing is asked for. Either way mitogen ships only the
    # packages and bytecache.
    assert sorted(first["precompiled"]) == sorted(eager_modules()), first
    assert first["requests"] == 0 and second["requests"] == 0, (first, second)
    assert second["precompiled"] == [], second
    assert first["shipped"] <= 4 and second["shipped"] <= 4, (first, second)
    # Private: a 0700 directory of the user, 0600 files, nothing else in it.
    outside = _outside(lab, directory)
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o700
    names = os.listdir(outside)
    assert names and all(n.endswith(".bc") for n in names), names
    assert {stat.S_IMODE(os.stat(os.path.join(outside, n)).st_mode) for n in names} == {0o600}


def test_compiled_modules_that_do_not_check_out_are_refused_for_source(lab, monkeypatch) -> None:
    """A compiled module the host cannot use (another Python's magic, a
    damaged blob) is not loaded: mitogen ships the source instead, all of it
    asked for at once, and the host compiles and caches it."""
    import zlib

    from remoteexec import host as host_module

    entry = next(e for e in bootstrap_manifest() if e[0] == SUPERVISOR)
    wrong_magic = bytecache.encode(entry[2], compile("", "x", "exec"), "").replace(
        bytecache.importlib.util.MAGIC_NUMBER.hex().encode(), b"00000000", 1
    )
    blobs = {SUPERVISOR: zlib.compress(wrong_magic)}
    monkeypatch.setattr(host_module, "compiled_module", lambda n: blobs.get(n, b"junk"))
    directory = _cache_dir()
    cold = _connect(lab, directory)
    assert cold["precompiled"] == [] and SUPERVISOR in cold["misses"], cold
    # One request per module install imports, all sent by prime at once
    # (imports left to themselves ask for fewer, one round trip each).
    assert cold["requests"] == len(eager_modules()), cold
    assert SUPERVISOR in _connect(lab, directory)["hits"], "compiled here and cached"


# -- mitogen.core, compiled once per host ------------------------------------------


def _core_file(lab: Any, directory: str) -> str:
    found = glob.glob(os.path.join(_outside(lab, directory), "core-*.bc"))
    assert len(found) == 1, found
    return found[0]


def _core_mark(lab: Any, directory: str) -> Any:
    """Connect; the context's ``mitogen.core`` RX_MARK (set only by a planted file)."""
    with rx.Master(heartbeat_timeout=5, bytecode_cache=directory) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        assert host.run(["true"]).returncode == 0, "the context works"
        return host.call(eval, "vars(__import__('mitogen.core').core).get('RX_MARK')")


def test_the_context_runs_the_mitogen_core_the_master_compiled(lab, monkeypatch) -> None:
    """Same bytecode magic on both sides: the context loads the code the
    master compiled and sent behind the preamble (a mark compiled into it
    shows it is what runs); it compiles nothing and writes no cache file.
    The source came along: the context can still hand mitogen.core on."""
    real = coreboot.core_code
    monkeypatch.setattr(
        coreboot, "core_code", lambda source: real(source + "\nRX_MARK = 'shipped'\n")
    )
    directory = _cache_dir()
    if _core_mark(lab, directory) != "shipped":
        with rx.Master(heartbeat_timeout=5, bytecode_cache=directory) as master:
            host = master.connect(lab.targets[0], **connect_options(lab))
            theirs = host.call(eval, "__import__('sys').version_info[:2]")
        assert tuple(theirs) != sys.version_info[:2], "same Python, yet not the master's code"
        pytest.skip("the lab's python is not this one: it compiles mitogen.core itself")
    assert glob.glob(os.path.join(_outside(lab, directory), "core-*.bc")) == []
    with rx.Master(heartbeat_timeout=5, bytecode_cache=directory) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        source = host.call(eval, "__import__('inspect').getsource(__import__('mitogen.core').core)")
        assert source == mitogen.parent._get_core_source(), "the real source, for children"
        # mitogen's profiling-only imports wait for their first use.
        later = "[type(__import__('sys').modules[n]).__name__ for n in %r]" % (coreboot.LATER,)
        assert set(host.call(eval, later)) == {"_RxLater"}
        assert host.call(eval, "__import__('pprint').pformat({1: 2})") == "{1: 2}"
        assert host.call(eval, "type(__import__('sys').modules['pprint']).__name__") == "module"


def test_a_second_context_loads_mitogen_core_compiled_by_the_first(lab, monkeypatch) -> None:
    """Without the master's code (another Python), the context's mitogen.core
    comes from the cache file a first context wrote (a planted file with a
    mark shows it is used), checked like any cache file: one byte changed,
    it is refused, compiled again and replaced."""
    monkeypatch.setattr(coreboot, "SHIP_COMPILED", False)
    directory = _cache_dir()
    assert _core_mark(lab, directory) is None
    path = _core_file(lab, directory)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as f:
        good = f.read()
    head = len(coreboot.MAGIC) + 32
    tag = good[head:].partition(b"\n")[0]
    if not tag.endswith(importlib.util.MAGIC_NUMBER.hex().encode()):
        pytest.skip("the lab's python is not this one: cannot plant code for it")
    source = mitogen.parent._get_core_source()
    code = compile(source + "\nRX_MARK = 'planted'\n", "<stdin>", "exec")
    body = tag + b"\n" + marshal.dumps(code)
    planted = coreboot.MAGIC + hashlib.sha256(body).digest() + body
    with open(path, "wb") as f:
        f.write(planted)
    assert _core_mark(lab, directory) == "planted", "the file is what the context ran"
    with open(path, "wb") as f:
        f.write(planted[:-100] + bytes([planted[-100] ^ 0xFF]) + planted[-99:])
    assert _core_mark(lab, directory) is None, "a damaged file is not used"
    with open(path, "rb") as f:
        assert f.read() == good, "compiled again and replaced"


def _pack_file(lab: Any, directory: str) -> str:
    found = glob.glob(os.path.join(_outside(lab, directory), "pack-*.bc"))
    assert len(found) == 1, found
    return found[0]


def test_the_modules_install_imports_are_stored_in_one_pack(lab) -> None:
    """A cold host writes one file for the modules the master sent compiled
    (creating files is what a cold cache costs most), 0600 like any."""
    directory = _cache_dir()
    first = _connect(lab, directory)
    path = _pack_file(lab, directory)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as f:
        packed = bytecache.unpack(f.read())
    assert sorted(packed) == sorted(first["precompiled"]) == sorted(eager_modules())
    assert len(os.listdir(_outside(lab, directory))) == 1, "nothing but the pack"


def test_a_tampered_cache_file_is_refused_and_replaced(lab) -> None:
    directory = _cache_dir()
    _connect(lab, directory)
    path = _pack_file(lab, directory)
    with open(path, "rb") as f:
        good = f.read()
    blobs = bytecache.unpack(good)
    middle = len(blobs[SUPERVISOR]) // 2  # one byte of the code, digest left as it was
    blobs[SUPERVISOR] = (
        blobs[SUPERVISOR][:middle]
        + bytes([blobs[SUPERVISOR][middle] ^ 0xFF])
        + blobs[SUPERVISOR][middle + 1 :]
    )
    # And a valid file of another module put under protocol's name: right
    # format, right digest, wrong source. Never trusted by its name alone.
    blobs[PROTOCOL] = blobs["remoteexec.target.run"]
    with open(path, "wb") as f:
        f.write(bytecache.pack(blobs))
    again = _connect(lab, directory)
    assert sorted(again["refused"]) == sorted([SUPERVISOR, PROTOCOL])
    assert SUPERVISOR in again["misses"] and PROTOCOL in again["misses"]
    assert SUPERVISOR in again["precompiled"], "sent compiled again, no source round trip"
    entry = next(e for e in bootstrap_manifest() if e[0] == SUPERVISOR)
    with open(path, "rb") as f:
        rewritten = bytecache.unpack(f.read())
    assert bytecache.decode(rewritten[SUPERVISOR], entry[2]) is not None, "a new pack"
    assert sorted(rewritten) == sorted(eager_modules())
    third = _connect(lab, directory)
    assert third["refused"] == [] and third["precompiled"] == [], third


def test_a_cache_file_of_another_user_is_refused_and_rebuilt(lab) -> None:
    """A pack this user does not own is never read: the modules come
    compiled from the master again, and a pack of the user's replaces it."""
    directory = _cache_dir()
    _connect(lab, directory)
    path = _pack_file(lab, directory)
    owner = os.stat(path).st_uid
    os.chown(path, 65534, 65534)
    again = _connect(lab, directory)
    assert sorted(again["precompiled"]) == sorted(eager_modules()), again
    assert again["hits"] == [], again
    assert os.stat(_pack_file(lab, directory)).st_uid == owner, "rebuilt, the user's"
    assert sorted(_connect(lab, directory)["hits"]) == sorted(eager_modules())


def test_a_directory_others_may_enter_is_not_used(lab) -> None:
    directory = _cache_dir()
    _connect(lab, directory)
    outside = _outside(lab, directory)
    os.chmod(outside, 0o755)
    try:
        done = _connect(lab, directory)
        assert done["primed"]["dir"] is None
        assert done["hits"] == [] and done["misses"] == []
    finally:
        os.chmod(outside, 0o700)


def test_a_context_loads_no_feature_module_it_does_not_use(lab) -> None:
    with rx.Master(heartbeat_timeout=5) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        host.run(["true"], check=True)
        loaded: List[str] = host.call(bytecache.loaded)
    assert SUPERVISOR in loaded
    assert not [m for m in loaded if m.startswith("remoteexec.target.tarantool")], loaded
    assert "http.client" not in loaded, "http.client comes with the first http check"
    detached = {"remoteexec.target.project", "remoteexec.target.keeper"}
    assert not detached & set(loaded), "detached stacks' modules come with the first detach"
    assert not [m for m in loaded if m.startswith("psutil")], "not shipped half from the master"


# -- the guard, started with the first process ----------------------------------


def _gone(identities: List[Any]) -> bool:
    return all(oracle.identity(pid) != (pid, start) for pid, start in identities)


def test_the_guard_starts_with_the_first_process_and_kills_on_context_sigkill(lab) -> None:
    with rx.Master(heartbeat_timeout=5) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        context = host.info["pid"]
        assert host.call(os.getpid) == context
        assert host.invoke(GUARD_STATUS) == {"started": False, "pid": None, "error": None}
        assert oracle.guards([context]) == [], "a context with no process has no guard"
        assert host.run(["true"]).returncode == 0
        guard = host.invoke(GUARD_STATUS)
        assert guard["started"] and guard["pid"] and guard["error"] is None
        assert oracle.guards([context]) == [guard["pid"]], "the first process started it"
        assert os.getsid(guard["pid"]) == guard["pid"], "in a session of its own"
        kept = rx.SimpleExecutor(["sleep", "600"], on=host).start()
        assert oracle.guards([context]) == [guard["pid"]], "one guard per context"
        watched = [oracle.identity(pid) for pid in (kept.pid, guard["pid"])]
        try:
            # Only the guard can end the service now: its context is gone at once.
            os.kill(context, signal.SIGKILL)
            assert wait_until(lambda: _gone(watched), SETTLE), oracle.describe([kept.pid])
        finally:
            for ident in watched:
                if ident is not None and oracle.identity(ident[0]) == ident:
                    os.kill(ident[0], signal.SIGKILL)


def test_a_master_sigkill_after_lazily_guarded_spawns_leaves_nothing() -> None:
    proc, info = spawn_master_script(None, "local")
    try:
        run_id, contexts = info["run_id"], info["context_pids"]
        guards = oracle.guards(contexts)
        assert len(guards) == len(contexts), "the services started their context's guard"
        watched = [oracle.identity(pid) for pid in guards]
        with left_nothing(run_id, contexts, at_least=3, timeout=SETTLE, contexts_exit=True):
            assert proc.poll() is None, "the master script runs until killed"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        assert _gone(watched), "the guards ended with their contexts"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_cache_is_refused_as_a_bad_argument() -> None:
    with pytest.raises(ValueError, match="bytecode_cache"):
        rx.Master(bytecode_cache="")


# -- connect_all's pacing ---------------------------------------------------------


def test_the_pacer_starts_at_its_floor_and_grows_only_while_cpus_idle() -> None:
    from remoteexec.master import LOW_CONNECTING, MAX_CONNECTING, ConnectPacer

    pacer = ConnectPacer(200, cpus=2, free_fds=10_000)
    assert pacer.limit == pacer.low == LOW_CONNECTING
    assert pacer.high == MAX_CONNECTING
    assert pacer.adjust(None) == LOW_CONNECTING, "no reading, no change"
    assert pacer.adjust(0.2) == LOW_CONNECTING, "busy enough: stays"
    seen = [pacer.adjust(0.9) for _ in range(20)]
    assert seen == sorted(seen) and seen[-1] == MAX_CONNECTING and max(seen) == MAX_CONNECTING
    down = [pacer.adjust(0.0) for _ in range(200)]
    assert min(down) == LOW_CONNECTING and down[-1] == LOW_CONNECTING


def test_the_pacer_is_bounded_by_targets_ceiling_cpus_and_open_files() -> None:
    from remoteexec.master import FDS_PER_CONNECTING, ConnectPacer

    assert ConnectPacer(3, cpus=2, free_fds=10_000).high == 3
    assert ConnectPacer(3, cpus=2, free_fds=10_000).limit == 3
    assert ConnectPacer(1, cpus=64, free_fds=10_000).limit == 1
    assert ConnectPacer(500, cpus=8, free_fds=10_000).low == 32, "four per CPU"
    assert ConnectPacer(500, cpus=2, ceiling=5, free_fds=10_000).high == 5
    assert ConnectPacer(500, cpus=2, ceiling=5, free_fds=10_000).low == 5
    assert ConnectPacer(500, cpus=2, free_fds=10 * FDS_PER_CONNECTING).high == 10
    assert ConnectPacer(500, cpus=2, free_fds=0).high == 1, "always one at least"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_connect_all_refuses_a_bad_max_parallel(bad: Any) -> None:
    with rx.Master() as master, pytest.raises(ValueError, match="max_parallel"):
        master.connect_all(["h1"], max_parallel=bad)


def test_the_ssh_options_prefer_curve25519_and_let_ssh_args_win() -> None:
    from remoteexec.connectors.ssh import FAST_KEX, SSHConnector

    args = SSHConnector.from_target("h1").options["ssh_args"]
    assert args[-2:] == ["-o", "KexAlgorithms=%s" % FAST_KEX]
    mine = ["-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com"]
    args = SSHConnector.from_target("h1", ssh_args=mine).options["ssh_args"]
    assert args.index(mine[1]) < args.index("KexAlgorithms=%s" % FAST_KEX), "ssh keeps the first"
    plain = SSHConnector.from_target("h1", kex_algorithms=None).options["ssh_args"]
    assert not [a for a in plain if "KexAlgorithms" in a]
    with pytest.raises(ValueError, match="kex_algorithms"):
        SSHConnector.from_target("h1", kex_algorithms="curve25519 -oProxyCommand=x")


def test_the_first_stage_is_encoded_once_per_process(monkeypatch) -> None:
    """mitogen reads and tokenizes its own source for every boot command;
    the master does it once (the command is otherwise mitogen's own)."""
    import inspect

    calls: List[str] = []
    real = inspect.getsourcelines

    def counted(obj: Any) -> Any:
        calls.append(getattr(obj, "__name__", "?"))
        return real(obj)

    monkeypatch.setattr(mitogen.parent.inspect, "getsourcelines", counted)
    with rx.Master(heartbeat_timeout=5, bytecode_cache=_cache_dir()) as master:
        hosts = [master.local(name="boot%d" % i) for i in range(3)]
        assert [h.call(abs, -i) for i, h in enumerate(hosts)] == [0, 1, 2]
    assert calls.count("_first_stage") <= 1, calls


def test_a_second_master_does_not_scan_the_modules_again(monkeypatch) -> None:
    """mitogen scans what a module it sends imports (compiling each one,
    mitogen.core included: ~50 ms) once per router; the masters of a
    process share what was found."""
    import mitogen.master

    with rx.Master(heartbeat_timeout=5) as master:
        assert master.local(name="scan").call(abs, -1) == 1
    scans: List[str] = []

    def counted(source: Any, path: str, mode: str) -> Any:
        scans.append(path)  # mitogen compiles a module to list its imports
        return compile(source, path, mode)

    monkeypatch.setattr(mitogen.master, "compile", counted, raising=False)
    with rx.Master(heartbeat_timeout=5) as master:
        assert master.local(name="scan").call(abs, -2) == 2
    assert scans == [], scans


def test_the_context_boots_in_the_process_ssh_started(lab) -> None:
    """No second interpreter start-up: the process ssh started (``python3
    -c <mitogen's stub>``) reads the preamble and becomes the context, named
    ``(mitogen:<name>)`` in its command line as mitogen's re-executed one."""
    with rx.Master(heartbeat_timeout=5) as master:
        host = master.connect(lab.targets[0], **connect_options(lab))
        argv = host.call(eval, "open('/proc/self/cmdline', 'rb').read()").split(b"\0")
        assert argv[1] == b"-c", argv[:2]
        assert argv[-3] == b"(mitogen:%s:%s)" % (master.name.encode(), host.name.encode())
        assert argv[-2].isdigit(), "the preamble's length, as mitogen's first stage takes it"
        assert host.run(["true"]).returncode == 0


def test_an_untested_mitogen_boots_the_usual_way(lab, monkeypatch) -> None:
    """The fast first stage leans on mitogen's private boot protocol: a mitogen
    outside the tested releases gets mitogen's own first stage (the
    interpreter re-executed, its command line mitogen's) and still works."""
    import mitogen

    with rx.Master(heartbeat_timeout=5) as master:
        assert coreboot.available(master.router)
        monkeypatch.setattr(mitogen, "__version__", coreboot.TESTED_MITOGEN[1])
        assert not coreboot.available(master.router)
        host = master.connect(lab.targets[0], **connect_options(lab))
        argv = host.call(eval, "open('/proc/self/cmdline', 'rb').read()").split(b"\0")
        assert argv[1] != b"-c", argv[:3]
        assert host.run(["true"]).returncode == 0
