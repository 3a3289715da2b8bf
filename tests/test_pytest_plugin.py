"""The pytest plugin (remoteexec.pytest), as a project sees it: inner pytest
sessions in fresh processes (``pytester.runpytest_subprocess``) that load
the plugin through its pytest11 entry point from the installed package, on
real lab hosts. Each inner session is small: 1-2 lab hosts, tiny stacks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Dict, Iterator, List

import pytest
from conftest import (
    REPO,
    connect_options,
    need_lab,
    need_tarantool,
    skip_or_fail,
    wait_until,
)

import remoteexec as rx
from remoteexec.lab import Lab
from remoteexec.stack import Stack, StackError, StackEvent
from remoteexec.tarantool import ReplicaSet

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.lab

#: Bound of one inner session (they take seconds; the machine may be loaded).
INNER_TIMEOUT = 240

#: A stack file of one HTTP server on the second of two hosts.
TINY = """
[defaults]
python = "/usr/bin/python3"

[hosts]
a = { target = "root@10.0.0.11" }
b = { target = "root@10.0.0.12" }

[services.web]
on = "b"
command = ["/usr/bin/python3", "-m", "http.server", "8000"]
ready = { http = "http://127.0.0.1:8000/" }
timeout = 20
"""

#: A stack whose only service exits at once, saying why.
BROKEN = """
[hosts]
a = { target = "root@10.0.0.11" }

[services.broken]
on = "a"
command = ["/usr/bin/python3", "-c", "import sys; sys.exit('no config here')"]
ready = { tcp = "127.0.0.1:8009" }
timeout = 20
"""

#: Shared by the inner test modules: the process state of a pid (lab hosts share the pid space).
INNER_HELPERS = '''
import os, time

def proc_state(pid):
    """The state letter of ``pid`` from /proc (T: stopped), "" once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""

def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
'''


@pytest.fixture
def lab_and_tarantool() -> None:
    need_lab()
    need_tarantool()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An inner session in a fresh process: plugins load from their entry points."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT)


def artifacts_of(pytester: pytest.Pytester, test: str) -> str:
    return os.path.join(str(pytester.path), ".remoteexec-artifacts", test)


@pytest.mark.usefixtures("lab_and_tarantool")
def test_fixtures_factories_and_faults(pytester: pytest.Pytester) -> None:
    """Each fixture and factory gives what it says, on the right hosts; a
    kill or pause from a test is no crash and is undone before the next test
    that uses the stack; a partition is healed after the test that made it."""
    pytester.makefile(".toml", tiny=TINY)
    pytester.makepyfile(helpers=INNER_HELPERS)
    pytester.makepyfile(
        test_inner="""
        import os, signal
        import remoteexec as rx
        from remoteexec.lab import Lab
        from remoteexec.pytest import executor_fixture, replicaset_fixture, stack_fixture
        from helpers import proc_state, wait_for

        web = stack_fixture("tiny.toml")
        server = executor_fixture(
            rx.HTTPExecutor, ["/usr/bin/python3", "-m", "http.server", "8001"],
            url="http://127.0.0.1:8001/", host=1, timeout=20,
        )
        storage = replicaset_fixture("storage", members=2)
        seen = {}

        def test_master(rx_master, request):
            assert isinstance(rx_master, rx.Master) and not rx_master.closed
            # loaded through its entry point, under the entry point's name
            plugin = request.config.pluginmanager.get_plugin("remoteexec")
            assert plugin.__name__ == "remoteexec.pytest.plugin"

        def test_lab(rx_lab):
            assert isinstance(rx_lab, Lab) and rx_lab.is_up and len(rx_lab.hosts) == 2

        def test_hosts(rx_lab, rx_hosts):
            assert len(rx_hosts) == 2
            for host, lab_host in zip(rx_hosts, rx_lab.hosts):
                out = host.run(["ip", "-4", "-o", "addr", "show", "eth0"], check=True).stdout
                assert " %s/" % lab_host.address in out, out

        def test_stack(web, rx_hosts):
            (row,) = web.status()
            assert (row["service"], row["state"]) == ("web", "ready"), row
            assert row["host"] == rx_hosts[1].name  # the file's host b on the second host

        def test_executor(server, rx_hosts):
            assert isinstance(server, rx.HTTPExecutor) and server.running()
            assert server.on is rx_hosts[1]

        def test_replicaset(storage, rx_hosts):
            assert [m.on for m in storage.members] == rx_hosts[:2]
            assert storage.leader.eval("return box.info.status") == "running"
            assert storage.members[1].eval("return box.info.ro") is True

        def test_executor_kill_is_no_crash(server):
            server.kill()
            assert not server.running()

        def test_killed_executor_is_restored(server):
            assert server.running()

        def test_member_kill_is_no_crash(storage):
            storage.kill(storage.members[1])

        def test_killed_member_is_restored(storage):
            assert storage.status()["state"] == "ready"
            assert storage.members[1].eval("return box.info.status") == "running"

        def test_kill(web):
            seen["pid"] = pid = web.status()[0]["pid"]
            web.kill("web")
            assert web.status()[0]["state"] == "stopped"
            wait_for(lambda: proc_state(pid) in ("", "Z"))

        def test_killed_is_restored(web):
            (row,) = web.status()
            assert row["state"] == "ready" and row["pid"] != seen["pid"], row

        def test_pause(web):
            seen["pid"] = pid = web.status()[0]["pid"]
            web.pause("web")
            assert web.paused == ["web"]
            wait_for(lambda: proc_state(pid) == "T")

        def test_paused_is_resumed(web):
            assert web.paused == [] and web.status()[0]["pid"] == seen["pid"]
            assert proc_state(seen["pid"]) not in ("T", "", "Z")

        def test_resume(web):
            pid = web.status()[0]["pid"]
            web.pause("web")
            wait_for(lambda: proc_state(pid) == "T")
            web.resume("web")
            wait_for(lambda: proc_state(pid) not in ("T", "t"))
            assert web.paused == []

        def test_partition(rx_lab, web):
            rx_lab.partition(1)  # web's host: the plugin heals it before it checks web
            assert rx_lab.cuts

        def test_partition_is_healed(rx_lab, web):
            assert rx_lab.cuts == []
            assert web.status()[0]["state"] == "ready"
        """
    )
    result = run(pytester, "--rx-lab-hosts", "2", "-v")
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.assert_outcomes(passed=17)


@pytest.mark.usefixtures("lab_and_tarantool")
def test_crashes_fail_the_test_and_failures_save_artifacts(pytester: pytest.Pytester) -> None:
    """A service (or a replica set's member) that dies while the test runs fails
    it (naming service, host, exit code and output) and is restored for the
    next test that uses it; a failing test
    (in its call or in a fixture's start) gets its artifacts and a report
    section; a passing one gets none."""
    pytester.makefile(".toml", tiny=TINY, broken=BROKEN)
    pytester.makepyfile(helpers=INNER_HELPERS)
    pytester.makepyfile(
        test_inner="""
        import os, signal
        from remoteexec.pytest import replicaset_fixture, stack_fixture
        from helpers import proc_state, wait_for

        web = stack_fixture("tiny.toml")
        broken = stack_fixture("broken.toml")
        storage = replicaset_fixture("storage", members=2)

        def test_crash(web):
            os.kill(web.status()[0]["pid"], signal.SIGKILL)
            wait_for(lambda: web.status()[0]["state"] == "exited")
            # nothing failed in the test itself: the plugin fails it

        def test_crashed_is_restored(web):
            assert web.status()[0]["state"] == "ready"

        def test_member_crash(storage):
            os.kill(storage.members[1].pid, signal.SIGKILL)
            wait_for(lambda: storage.members[1].status()["state"] == "exited")

        def test_fails_with_tarantool(storage):
            assert storage.leader.eval("return 1 + 1") == 3

        def test_fixture_fails_to_start(broken):
            pass

        def test_passes(storage):
            assert storage.leader.eval("return 1 + 1") == 2
        """
    )
    result = run(pytester, "--rx-lab-hosts", "2")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=3, errors=1)
    host = _web_host(out)
    assert "service web on %s exited unexpectedly (exit code -9)" % host in out, out[-6000:]
    # a replica set's member: named, and the set restored for the next test
    assert re.search(r"storage: service storage(/storage-2)? on \S+ exited unexpectedly", out)

    crash = artifacts_of(pytester, "test_inner.py_test_crash")
    with open(os.path.join(crash, "web", "status.json")) as f:
        (row,) = json.load(f)
    assert (row["service"], row["state"], row["exit_code"]) == ("web", "exited", -9)
    logs = os.listdir(os.path.join(crash, "web", "web"))
    assert any(name.startswith("web@") and name.endswith(".log") for name in logs), logs
    assert "artifacts: %s" % crash in out

    failed = artifacts_of(pytester, "test_inner.py_test_fails_with_tarantool")
    for member in ("storage-1", "storage-2"):
        where = os.path.join(failed, "storage", "storage", member)
        with open(os.path.join(where, "box_info.json")) as f:
            dump = json.load(f)
        assert dump["member"] == member and dump["box_info"]["status"] == "running", dump
        assert os.path.getsize(os.path.join(where, "tarantool.log")) > 0
    with open(os.path.join(failed, "storage", "status.json")) as f:
        assert json.load(f)[0]["state"] == "ready"
    assert "artifacts: %s" % failed in out
    assert "remoteexec" in out  # the report's section title

    setup = artifacts_of(pytester, "test_inner.py_test_fixture_fails_to_start")
    assert os.path.isfile(os.path.join(setup, "broken", "status.json"))
    assert "broken: stack broken failed to start" in out and "no config here" in out, out[-6000:]
    assert not os.path.exists(artifacts_of(pytester, "test_inner.py_test_passes"))
    assert not os.path.exists(artifacts_of(pytester, "test_inner.py_test_crashed_is_restored"))


def _web_host(out: str) -> str:
    """The host the report names for web (a lab target, root@10.x.y.12)."""
    for line in out.splitlines():
        if line.startswith("web: service web on "):
            return line.split(" on ", 1)[1].split(" ", 1)[0]
    raise AssertionError("no crash line for web in:\n" + out[-6000:])


@pytest.mark.usefixtures("lab_and_tarantool")
def test_inventory_maps_file_hosts_by_name(pytester: pytest.Pytester, lab: Lab) -> None:
    """``--rx-inventory``: rx_hosts are the file's hosts, named as there, and a
    stack file's hosts map onto them by name; no lab is built."""
    options = connect_options(lab)
    inventory = "\n".join(
        ["[defaults]", 'python = "%s"' % options["python"]]
        + ['identity_file = "%s"' % options["identity_file"]]
        + ['known_hosts_file = "%s"' % options["known_hosts_file"], "", "[hosts]"]
        + ['%s = { target = "%s" }' % (n, t) for n, t in zip("yx", lab.targets)]
    )
    # The file's hosts in another order than the inventory's: x first, then y.
    tiny = TINY.replace("\na = ", "\nx = ").replace("\nb = ", "\ny = ")
    pytester.makefile(".toml", inventory=inventory, tiny=tiny.replace('on = "b"', 'on = "x"'))
    pytester.makepyfile(
        test_inner="""
        from remoteexec.pytest import stack_fixture

        web = stack_fixture("tiny.toml")

        def test_hosts(rx_hosts, request):
            assert [h.name for h in rx_hosts] == ["y", "x"]
            assert "rx_lab" not in request.fixturenames

        def test_by_name(web, rx_hosts):
            assert web.status()[0]["host"] == "x"
        """
    )
    result = run(pytester, "--rx-inventory", str(pytester.path / "inventory.toml"))
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.assert_outcomes(passed=2)


@pytest.mark.usefixtures("lab_and_tarantool")
def test_xdist_workers_get_labs_of_their_own(pytester: pytest.Pytester) -> None:
    """``-n 2``: each worker builds its own lab (own name, own subnet), and the
    same fixed port serves on both at once."""
    pytester.makepyfile(
        test_inner="""
        import json, os
        import remoteexec as rx
        from remoteexec.pytest import executor_fixture

        web = executor_fixture(
            rx.HTTPExecutor, ["/usr/bin/python3", "-m", "http.server", "8000"],
            url="http://127.0.0.1:8000/", timeout=20,
        )

        def test_lab(rx_lab, rx_hosts, web):
            out = rx_hosts[0].run(["ip", "-4", "-o", "addr", "show", "eth0"], check=True).stdout
            row = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "lab": rx_lab.name,
                   "subnet": str(rx_lab.subnet), "eth0": out, "pid": web.pid}
            with open("labs.jsonl", "a") as f:
                f.write(json.dumps(row) + "\\n")
        """
    )
    result = run(pytester, "--rx-lab-hosts", "1", "-n", "2", "--dist", "each")
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.assert_outcomes(passed=2)
    rows = [json.loads(line) for line in (pytester.path / "labs.jsonl").read_text().splitlines()]
    assert sorted(r["worker"] for r in rows) == ["gw0", "gw1"], rows
    assert len({r["lab"] for r in rows}) == 2 and len({r["subnet"] for r in rows}) == 2, rows
    for r in rows:
        assert " %s.11/" % r["subnet"].rsplit(".", 1)[0] in r["eth0"], r


@pytest.mark.usefixtures("lab_and_tarantool")
def test_the_guides_example_runs(pytester: pytest.Pytester) -> None:
    """docs/examples/crosshost (the guide "Write a cross-host test"), as a project
    would run it: its own directory, no conftest, three lab hosts."""
    example = os.path.join(REPO, "docs", "examples", "crosshost")
    for name in os.listdir(example):
        if name.endswith((".py", ".toml", ".lua")):
            shutil.copy(os.path.join(example, name), str(pytester.path))
    result = run(pytester, "--rx-lab-hosts", "3")
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.assert_outcomes(passed=1)


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    """A bad ``--rx-lab-hosts`` or a missing ``--rx-inventory`` stops the session
    before any test, naming the option."""
    pytester.makepyfile(test_inner="def test_nothing():\n    pass\n")
    zero = run(pytester, "--rx-lab-hosts", "0")
    assert zero.ret == pytest.ExitCode.USAGE_ERROR
    assert "--rx-lab-hosts: N must be at least 1, got 0" in zero.stderr.str()
    missing = run(pytester, "--rx-inventory", "nowhere.toml")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert "--rx-inventory nowhere.toml: no such file" in missing.stderr.str()


# -- the faults a test makes: Stack.kill, pause, resume ------------------------


def _proc_state(pid: int) -> str:
    """The state letter of ``pid`` from /proc (T: stopped), "" once it is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
    return "" if state == "Z" else state


def test_stack_faults_on_a_replica_set_and_a_group(lab: Lab) -> None:
    """pause() stops every process of a replica set (SIGSTOP) until resume();
    kill() SIGKILLs each member of a group, books it stopped (no exit event:
    no crash) and restart() brings it back. Bad calls are refused."""
    need_tarantool()
    events: List[StackEvent] = []
    with rx.Master(heartbeat_timeout=10) as master:
        a, b = master.connect_all(lab.targets[:2], **connect_options(lab))
        stack = Stack("faults")
        stack.add(ReplicaSet("storage", [(a, 3311), (b, 3311)]))

        def web(host: rx.Host) -> rx.HTTPExecutor:
            command = ["/usr/bin/python3", "-m", "http.server", "8011"]
            return rx.HTTPExecutor(command, url="http://127.0.0.1:8011/", on=host, timeout=20)

        stack.add(web, name="web", on=[a, b])
        with pytest.raises(StackError, match="not up"):
            stack.kill("web")
        stack.subscribe(events.append)
        with stack:
            storage = stack["storage"].service
            pids = [m.pid for m in storage.members]
            stack.pause("storage")
            assert stack.paused == ["storage"]
            # A signal takes effect when the process next runs: under load, later.
            assert wait_until(lambda: [_proc_state(p) for p in pids] == ["T", "T"], 10)
            stack.resume()
            assert stack.paused == []
            assert wait_until(lambda: all(_proc_state(p) not in ("T", "") for p in pids), 10)
            assert storage.leader.eval("return box.info.status") == "running"

            rows = {r["service"]: r for r in stack.status()}
            web_pids = [rows["web.1"]["pid"], rows["web.2"]["pid"]]
            stack.kill("web")
            rows = {r["service"]: r for r in stack.status()}
            assert [rows[n]["state"] for n in ("web.1", "web.2")] == ["stopped", "stopped"]
            assert wait_until(lambda: not any(_proc_state(p) for p in web_pids), 10)
            killed = [e for e in events if e.kind == "stopped" and e.message == "killed"]
            assert sorted(e.service for e in killed) == ["web.1", "web.2"]
            assert not [e for e in events if e.kind == "exited"], events
            stack.restart("web")
            assert {r["state"] for r in stack.status()} == {"ready"}
            with pytest.raises(ValueError, match="no service named 'nope'"):
                stack.pause("nope")


# -- without root ----------------------------------------------------------------


def _without_root(
    directory: str, environ: Dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """pytest on ``directory`` without root (as user nobody when we are root),
    with this checkout and this environment's packages, so the plugin's
    entry point loads."""
    site = sysconfig.get_paths()["purelib"]
    env = dict(environ, HOME=directory, PYTHONPATH=os.pathsep.join([REPO, site]))
    command: List[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            skip_or_fail("setpriv is not installed: cannot run a session without root")
        command = [str(setpriv), "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    # This interpreter may sit where nobody cannot reach (a pyenv under /root):
    # then Debian's, of the same version, with this environment's packages.
    found = None
    for python in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            [*command, python, "-c", "import remoteexec.pytest.plugin, xdist"],
            env=env,
            cwd=directory,
            capture_output=True,
            timeout=timeout,
        )
        if probe.returncode == 0:
            found = python
            break
    if found is None:
        skip_or_fail("no interpreter that user nobody can run with this environment's packages")
    return subprocess.run(
        [*command, str(found), "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", directory],
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def nobodys_project() -> Iterator[str]:
    """A test module user nobody can read, in a directory it can enter."""
    directory = tempfile.mkdtemp(prefix="rx-plugin-noroot-")
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "test_noroot.py")
        with open(path, "w") as f:
            f.write("def test_needs_a_lab(rx_lab):\n    pass\n")
        os.chmod(path, 0o644)
        yield directory
    finally:
        shutil.rmtree(directory)


def test_without_root_rx_lab_skips_saying_why(nobodys_project: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    done = _without_root(nobodys_project, environ)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout, done.stdout
    assert "rx_lab: lab unavailable: remoteexec.lab needs root" in done.stdout, done.stdout


def test_without_root_under_ci_rx_lab_fails(nobodys_project: str) -> None:
    done = _without_root(nobodys_project, dict(os.environ, CI="true"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout, done.stdout
    assert "needs root" in done.stdout and "CI must not skip it (CI=true)" in done.stdout


def test_loading_the_plugin_loads_no_library() -> None:
    """pytest loads the plugin in every run of the environment: mitogen, the
    lab and the stack come with the fixtures that use them, not with it."""
    code = (
        "import sys, remoteexec.pytest.plugin, remoteexec.pytest\n"
        "heavy = ['mitogen', 'remoteexec.host', 'remoteexec.lab', 'remoteexec.stack',"
        " 'remoteexec.pytest.factories', 'paramiko']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "remoteexec.pytest.stack_fixture\n"
        "print('remoteexec.pytest.factories' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout + out.stderr
