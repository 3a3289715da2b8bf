"""The stack's pure logic: graph checks, start order and waves, references.

No host is needed: these are the checks that must refuse a stack before
anything starts, and the order things start and stop in.
"""

from __future__ import annotations

from typing import Collection, Dict, Optional

import pytest

from remoteexec.stack import Ref, Template, graph, interpolate, template


def test_waves_group_independent_services() -> None:
    g = {
        "storage": {},
        "cache": {},
        "router": {"storage": "healthy"},
        "seed": {"storage": "healthy"},
        "api": {"router": "healthy", "seed": "completed", "cache": "started"},
    }
    graph.check(g, jobs=["seed"])
    assert graph.waves(g) == [["storage", "cache"], ["router", "seed"], ["api"]]
    order = graph.order(g)
    assert order.index("storage") < order.index("router") < order.index("api")


def test_cycle_is_named_with_its_path() -> None:
    g = {"a": {"c": "healthy"}, "b": {"a": "healthy"}, "c": {"b": "healthy"}, "d": {}}
    with pytest.raises(ValueError, match=r"dependency cycle: (a -> c -> b -> a|.* -> .* -> .*)"):
        graph.check(g)
    found = graph.cycle(g)
    assert found is not None and found[0] == found[-1] and set(found) == {"a", "b", "c"}


def test_unknown_dependency_self_dependency_and_bad_conditions() -> None:
    with pytest.raises(ValueError, match="'api' depends on 'router', which is not in the stack"):
        graph.check({"api": {"router": "healthy"}})
    with pytest.raises(ValueError, match="'a' depends on itself"):
        graph.check({"a": {"a": "healthy"}})
    with pytest.raises(ValueError, match="condition 'up'"):
        graph.check({"a": {}, "b": {"a": "up"}})
    with pytest.raises(ValueError, match="'a' is not a job"):
        graph.check({"a": {}, "b": {"a": "completed"}})


def test_closure_and_subgraph_for_restarts() -> None:
    g = {"s": {}, "r": {"s": "healthy"}, "api": {"r": "healthy"}, "other": {}}
    assert graph.closure(g, ["r"]) == ["r", "api"]
    assert graph.subgraph(g, ["r", "api"]) == {"r": {}, "api": {"r": "healthy"}}
    assert graph.dependents(g) == {"s": ["r"], "r": ["api"], "api": [], "other": []}


class Endpoints:
    """A reference target with fixed endpoints (what a stack handle offers)."""

    def __init__(self, name: str, values: Dict[str, Optional[str]]) -> None:
        self.name = name
        self.values = values

    def endpoint_names(self) -> Collection[str]:
        return list(self.values)

    def endpoint(self, key: str) -> Optional[str]:
        return self.values[key]


def test_interpolate_makes_references_found_by_the_longest_name() -> None:
    storage = Endpoints("storage", {"leader.uri": "10.0.0.1:3301"})
    api1 = Endpoints("api.1", {"uri": "10.0.0.2:8080"})
    found = {"storage": storage, "api.1": api1}
    assert interpolate("plain $$ text", found) == "plain $$ text"
    assert interpolate("literal $${x.y}", found) == "literal ${x.y}"
    ref = interpolate("${storage.leader.uri}", found)
    assert isinstance(ref, Ref) and ref.resolve() == "10.0.0.1:3301"
    assert ref.service == "storage"
    joined = interpolate("--a=${storage.leader.uri} --b=${ api.1.uri }", found)
    assert isinstance(joined, Template)
    assert joined.resolve() == "--a=10.0.0.1:3301 --b=10.0.0.2:8080"
    assert [r.service for r in joined.refs()] == ["storage", "api.1"]
    # A function works as the lookup too.
    assert interpolate("${storage.leader.uri}", found.get).resolve() == "10.0.0.1:3301"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("${router}", r"\$\{router\} is not a reference"),
        ("${}", r"is not a reference"),
        ("x ${router.uri", "without a closing"),
        ("${a b.c}", "is not a reference"),
    ],
)
def test_interpolate_refuses_malformed_placeholders(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        interpolate(text, {})


def test_unknown_service_or_endpoint_is_refused_when_bound() -> None:
    found = {"router": Endpoints("router", {"uri": None})}
    with pytest.raises(ValueError, match="no service named 'nope'"):
        interpolate("${nope.uri}", found).bind()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"has no endpoint 'port' \(it has: uri\)"):
        interpolate("${router.port}", found).bind()  # type: ignore[union-attr]
    # Known name, value not known yet (not started): resolve says so.
    with pytest.raises(ValueError, match="has no 'uri' yet"):
        interpolate("${router.uri}", found).resolve()  # type: ignore[union-attr]


def test_refs_combine_with_strings() -> None:
    found = {"router": Endpoints("router", {"uri": "h:1"})}
    ref = Ref("router.uri", found)
    assert ("--uri=" + ref).resolve() == "--uri=h:1"
    assert (ref + "/x").resolve() == "h:1/x"
    assert template("tcp://", ref, "/db").resolve() == "tcp://h:1/db"
    assert repr("a${b" + ref) == "a$${b${router.uri}"
    with pytest.raises(TypeError, match="combines with str"):
        _ = ref + 5
