"""remoteexec's pytest plugin: cross-host integration tests with no conftest code.

Installed with remoteexec, it registers itself as the pytest11 entry point
``remoteexec`` (module :mod:`remoteexec.pytest.plugin`), so every pytest
run in the environment has its fixtures and options:

- ``rx_master`` (session): a :class:`~remoteexec.Master`;
- ``rx_lab`` (session): a :class:`~remoteexec.lab.Lab` of ``--rx-lab-hosts N``
  hosts (default 3). Without what a lab needs (root) it skips, saying why;
  with ``CI`` set (``true``, ``1``...) it fails instead;
- ``rx_hosts`` (session): the connected Hosts: those of ``--rx-inventory
  FILE`` (a stack file's ``[hosts]``), otherwise the lab's.

The factories here make fixtures of started services, brought down after
their scope::

    import remoteexec as rx
    from remoteexec.pytest import executor_fixture, replicaset_fixture, stack_fixture

    shop = stack_fixture("shop.toml")                       # a started Stack
    storage = replicaset_fixture("storage", members=3)      # a started ReplicaSet
    web = executor_fixture(rx.HTTPExecutor, ["python3", "-m", "http.server", "8000"],
                           url="http://127.0.0.1:8000/", host=1)

For every test that uses them the plugin fails the test when one of their
services exited unexpectedly during it (even if its asserts passed),
restores them before the next test that uses them, heals the lab's
partitions after each test, and saves artifacts (logs from every host,
``status()`` as JSON, Tarantool ``box.info`` dumps) under ``--rx-artifacts
DIR/<test>`` when a test fails, with a report section that shows the last
lines of each failed or unready service.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remoteexec.pytest.factories import executor_fixture, replicaset_fixture, stack_fixture

__all__ = ["executor_fixture", "replicaset_fixture", "stack_fixture"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: pytest loads the plugin (this package) in every
    # run, and the factories bring the whole library with them.
    if name in __all__:
        from remoteexec.pytest import factories

        return getattr(factories, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
