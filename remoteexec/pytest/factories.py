"""Fixture factories, in the style of pytest-postgresql's ``factories``.

Each returns a pytest fixture; assign it to a name in a test module or a
conftest and request it by that name::

    shop = stack_fixture("shop.toml")

    def test_order(shop):
        shop.logs("api")

The fixture starts its services on ``rx_hosts`` when its scope begins and
brings them down when it ends, and the plugin watches them in between
(unexpected exits fail the test; the next test gets them restored).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Dict, Iterator, List, Literal, Sequence, Union, cast

import pytest

from remoteexec.host import Host
from remoteexec.pytest.plugin import failed_setup, track, untrack
from remoteexec.stack import Stack
from remoteexec.stack import file as stackfile

#: The scopes a factory takes (pytest's).
SCOPES = ("session", "package", "module", "class", "function")
Scope = Literal["session", "package", "module", "class", "function"]


def _scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise ValueError("scope must be one of %s, got %r" % (", ".join(SCOPES), scope))
    return cast(Scope, scope)


def _caller_dir() -> str:
    """The directory of the module that called the factory (relative paths start there)."""
    frame = inspect.currentframe()
    for _ in range(3):  # this function, the factory, its caller
        if frame is None:
            break
        frame = frame.f_back
        if frame is not None and frame.f_globals.get("__name__") != __name__:
            return os.path.dirname(os.path.abspath(frame.f_globals.get("__file__") or "."))
    return os.getcwd()


def host_map(names: Sequence[str], hosts: Sequence[Host]) -> Dict[str, Host]:
    """The file's host names onto ``hosts``: by name when every name is one of
    theirs (an inventory), else in order, file host i on host i mod N (a lab)."""
    if not hosts:
        raise ValueError("rx_hosts is empty: no host to map the file's hosts onto")
    by_name = {h.name: h for h in hosts}
    if all(n in by_name for n in names):
        return {n: by_name[n] for n in names}
    return {n: hosts[i % len(hosts)] for i, n in enumerate(names)}


def _run(request: pytest.FixtureRequest, stack: Stack, value: Any) -> Iterator[Any]:
    """Start ``stack``, hand ``value`` to the tests, bring it down after the scope."""
    name = request.fixturename or stack.name
    tracked = track(request.config, name, stack, value)
    try:
        try:
            stack.up()
        except BaseException as e:
            tracked.setup_error = e
            failed_setup(request.config, tracked)
            raise
        yield value
    finally:
        try:
            if stack.paused:
                stack.resume()
        finally:
            try:
                stack.down()
            finally:
                untrack(request.config, value)


def stack_fixture(path: str, scope: str = "module") -> Any:
    """A fixture giving the started :class:`~remoteexec.stack.Stack` of the
    stack file ``path`` (relative to the calling module's directory), on
    ``rx_hosts``: the file's hosts by name (``--rx-inventory``), else in
    order onto the lab's. Brought down at the end of ``scope``."""
    scope = _scope(scope)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("stack_fixture: path must be a path to a stack file, got %r" % (path,))
    full = os.path.join(_caller_dir(), os.fspath(path))
    topology = stackfile.read(full)  # a file problem is an error at import, naming the key

    @pytest.fixture(scope=scope)
    def started_stack(request: pytest.FixtureRequest, rx_hosts: List[Host]) -> Iterator[Stack]:
        stack = Stack.from_file(full, hosts=host_map(list(topology.hosts), rx_hosts))
        yield from _run(request, stack, stack)

    return started_stack


def executor_fixture(
    executor: Union[type, Callable[[Host], Any]],
    *args: Any,
    host: int = 0,
    scope: str = "module",
    **kwargs: Any,
) -> Any:
    """A fixture giving a started executor on ``rx_hosts[host]``.

    ``executor`` is an executor class, called as ``executor(*args,
    on=host, **kwargs)``, or a callable ``(host) -> executor`` for what
    depends on the host (its address, say). Stopped at the end of ``scope``.
    """
    scope = _scope(scope)
    if isinstance(host, bool) or not isinstance(host, int) or host < 0:
        raise ValueError("executor_fixture: host must be an index into rx_hosts, got %r" % (host,))
    if not callable(executor):
        raise TypeError("executor_fixture: %r is not an executor class or callable" % (executor,))

    @pytest.fixture(scope=scope)
    def started_executor(request: pytest.FixtureRequest, rx_hosts: List[Host]) -> Iterator[Any]:
        on = _host(rx_hosts, host)
        # A class takes the arguments; a plain callable builds it from the host.
        service = executor(*args, on=on, **kwargs) if isinstance(executor, type) else executor(on)
        stack = Stack(request.fixturename or "executor")
        stack.add(service, name=request.fixturename)
        yield from _run(request, stack, service)

    return started_executor


def replicaset_fixture(
    name: str,
    members: Union[int, Sequence[int]] = 3,
    port: int = 3301,
    scope: str = "module",
    **kwargs: Any,
) -> Any:
    """A fixture giving a started :class:`~remoteexec.tarantool.ReplicaSet`
    ``name``: one member per host of ``rx_hosts`` (``members=3``: the first
    three; a list: those indexes), each listening on ``port`` on its host's
    address; ``kwargs`` go to ReplicaSet (``app_lua`` is not one: use a
    stack file for that). Stopped at the end of ``scope``."""
    scope = _scope(scope)
    if isinstance(members, int) and not isinstance(members, bool):
        if members < 1:
            raise ValueError("replicaset_fixture: members must be at least 1, got %d" % members)
        indexes = list(range(members))
    else:
        indexes = [int(i) for i in members]  # type: ignore[union-attr]
        if not indexes:
            raise ValueError("replicaset_fixture: members must name at least one host")

    @pytest.fixture(scope=scope)
    def started_replicaset(request: pytest.FixtureRequest, rx_hosts: List[Host]) -> Iterator[Any]:
        from remoteexec.tarantool import ReplicaSet

        replicaset = ReplicaSet(name, [(_host(rx_hosts, i), port) for i in indexes], **kwargs)
        stack = Stack(request.fixturename or name)
        stack.add(replicaset, name=name)
        yield from _run(request, stack, replicaset)

    return started_replicaset


def _host(hosts: Sequence[Host], index: int) -> Host:
    if not 0 <= index < len(hosts):
        raise ValueError(
            "host index %d: rx_hosts has %d hosts (--rx-lab-hosts or --rx-inventory)"
            % (index, len(hosts))
        )
    return hosts[index]


__all__ = ["SCOPES", "executor_fixture", "host_map", "replicaset_fixture", "stack_fixture"]
