"""The dependency graph of a stack: checks, start order, waves, stop order.

Pure functions over ``{service: {dependency: condition}}``, so the checks
that must refuse a stack before anything starts (unknown dependency, a
cycle, a condition a service cannot meet) are testable without a host.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Set

#: The conditions a dependent can wait for, weakest first.
CONDITIONS = ("started", "healthy", "completed")

Graph = Mapping[str, Mapping[str, str]]


def check(graph: Graph, jobs: Iterable[str] = ()) -> None:
    """Raise ValueError naming the service and the cause if ``graph`` cannot start.

    Every dependency must be a service of the graph, conditions must be in
    :data:`CONDITIONS`, ``"completed"`` needs a job, and there is no cycle
    (the message shows one, e.g. ``a -> b -> a``).
    """
    jobs = set(jobs)
    for name, deps in graph.items():
        for dep, condition in deps.items():
            if dep == name:
                raise ValueError("service %r depends on itself" % name)
            if dep not in graph:
                known = ", ".join(sorted(graph)) or "none"
                raise ValueError(
                    "service %r depends on %r, which is not in the stack (services: %s)"
                    % (name, dep, known)
                )
            if condition not in CONDITIONS:
                raise ValueError(
                    "service %r: condition %r on %r is not one of %s"
                    % (name, condition, dep, ", ".join(CONDITIONS))
                )
            if condition == "completed" and dep not in jobs:
                raise ValueError(
                    "service %r waits for %r to be 'completed', but %r is not a job"
                    " (add it with job=True)" % (name, dep, dep)
                )
    found = cycle(graph)
    if found:
        raise ValueError("dependency cycle: %s" % " -> ".join(found))


def cycle(graph: Graph) -> Optional[List[str]]:
    """One dependency cycle as a path that ends where it began, or None."""
    white, grey, black = 0, 1, 2
    color = {name: white for name in graph}
    for root in graph:
        if color[root] != white:
            continue
        # Iterative DFS: a path of (node, iterator over its dependencies).
        path = [root]
        iters = [iter(graph[root])]
        color[root] = grey
        while iters:
            dep = next(iters[-1], None)
            if dep is None:
                color[path.pop()] = black
                iters.pop()
                continue
            if dep not in color:
                continue
            if color[dep] == grey:
                return [*path[path.index(dep) :], dep]
            if color[dep] == white:
                color[dep] = grey
                path.append(dep)
                iters.append(iter(graph[dep]))
    return None


def waves(graph: Graph) -> List[List[str]]:
    """The start order in waves: each wave's services depend only on earlier waves.

    Within a wave, services keep the order they were added. The runner
    does not wait for a whole wave (a service starts as soon as its own
    dependencies are met); the waves are what ``config`` shows.
    """
    level: Dict[str, int] = {}
    for name in order(graph):
        level[name] = 1 + max((level[d] for d in graph[name]), default=-1)
    out: List[List[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for name in graph:
        out[level[name]].append(name)
    return out


def order(graph: Graph) -> List[str]:
    """A start order (dependencies first), stable in the order services were added."""
    done: Set[str] = set()
    out: List[str] = []
    pending = list(graph)
    for _ in range(len(pending) + 1):
        if not pending:
            break
        left = []
        for name in pending:
            if all(dep in done for dep in graph[name]):
                done.add(name)
                out.append(name)
            else:
                left.append(name)
        if len(left) == len(pending):
            raise ValueError("dependency cycle: %s" % " -> ".join(cycle(graph) or left))
        pending = left
    return out


def dependents(graph: Graph) -> Dict[str, List[str]]:
    """Service → the services that depend on it directly."""
    out: Dict[str, List[str]] = {name: [] for name in graph}
    for name, deps in graph.items():
        for dep in deps:
            out.setdefault(dep, []).append(name)
    return out


def closure(graph: Graph, names: Iterable[str]) -> List[str]:
    """``names`` and every service that depends on them, transitively, in start order."""
    below = dependents(graph)
    seen: Set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(below.get(name, []))
    return [name for name in order(graph) if name in seen]


def subgraph(graph: Graph, names: Iterable[str]) -> Dict[str, Dict[str, str]]:
    """The graph restricted to ``names``: dependencies outside them are dropped
    (they are taken as met: a restart starts only part of a running stack)."""
    keep = set(names)
    return {n: {d: c for d, c in graph[n].items() if d in keep} for n in graph if n in keep}


__all__ = ["CONDITIONS", "check", "closure", "cycle", "dependents", "order", "subgraph", "waves"]
