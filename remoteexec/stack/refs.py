"""References: values of one service (its endpoints) used in another's inputs.

``handle.ref("uri")`` is a :class:`Ref`, a :class:`~remoteexec.services.Deferred`:
the dependent service resolves it at the start of its ``start()``, after the
stack has started the service it names, so a port picked at start (port 0)
reaches it. A Ref combines with strings into a :class:`Template`
(``"--uri=" + ref``, or :func:`template`), and :func:`interpolate` turns text
with ``${service.endpoint}`` in it (the topology file's syntax) into one.

A reference is checked before anything starts: an unknown service or an
endpoint name the service does not have is a ValueError naming both.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Collection, List, Optional, Protocol, Tuple, Union


class Target(Protocol):
    """What a reference points at: a stack's handle of one service or of a group."""

    name: str

    def endpoint_names(self) -> Collection[str]:
        """The endpoint names a reference may use (fixed when the service was made)."""
        ...

    def endpoint(self, key: str) -> Optional[str]:
        """The endpoint's value now, None while not known (not started)."""
        ...


#: Where references find services by name: a mapping, a Stack, or a function.
Lookup = Union[Callable[[str], Optional[Target]], Any]

#: ``${service.endpoint}``; ``$${`` is a literal ``${``.
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


def _find(lookup: Lookup, name: str) -> Optional[Target]:
    getter = getattr(lookup, "get", None)
    found: Optional[Target] = getter(name) if callable(getter) else lookup(name)
    return found


class Ref:
    """``${service.endpoint}``: one endpoint of a service, resolved at start.

    Made by ``handle.ref(key)`` (bound at once) or by name through
    :func:`interpolate` / ``Stack.ref(path)`` (bound when the stack checks
    its services, so the named service may be added later).
    """

    def __init__(self, path: str, lookup: Lookup, target: Optional[Target] = None) -> None:
        if not isinstance(path, str) or "." not in path.strip("."):
            raise ValueError(
                "reference %r must be 'service.endpoint' (e.g. 'router.uri')" % (path,)
            )
        self.path = path
        self._lookup = lookup
        self._bound: Optional[Tuple[Target, str]] = None
        if target is not None:
            key = path[len(target.name) + 1 :]
            self._bound = (target, _checked_key(target, key, path))

    def bind(self) -> Tuple[Target, str]:
        """(target, endpoint name), or ValueError if either is unknown.

        Service names may hold dots (``api.1``), endpoint names too
        (``leader.uri``): the longest service name that exists wins.
        """
        if self._bound is None:
            parts = self.path.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                target = _find(self._lookup, ".".join(parts[:cut]))
                if target is not None:
                    key = ".".join(parts[cut:])
                    self._bound = (target, _checked_key(target, key, self.path))
                    break
            else:
                raise ValueError(
                    "reference ${%s}: no service named %r in the stack" % (self.path, parts[0])
                )
        return self._bound

    @property
    def service(self) -> str:
        """The name of the service it refers to."""
        return self.bind()[0].name

    def refs(self) -> List[Ref]:
        """This reference, as a list (the same call as on a Template)."""
        return [self]

    def resolve(self) -> str:
        """The endpoint's value; ValueError if the service has not made it known."""
        target, key = self.bind()
        value = target.endpoint(key)
        if value is None:
            raise ValueError(
                "reference ${%s}: service %r has no %r yet (not started, or it did not"
                " say)" % (self.path, target.name, key)
            )
        return value

    def __add__(self, other: Any) -> Template:
        return Template([self, other])

    def __radd__(self, other: Any) -> Template:
        return Template([other, self])

    def __repr__(self) -> str:
        return "${%s}" % self.path


def _checked_key(target: Target, key: str, path: str) -> str:
    names = target.endpoint_names()
    if key not in names:
        raise ValueError(
            "reference ${%s}: service %r has no endpoint %r (it has: %s)"
            % (path, target.name, key, ", ".join(sorted(names)) or "none")
        )
    return key


class Template:
    """Strings and references joined; resolves to one string (``"--uri=" + ref``)."""

    def __init__(self, parts: List[Any]) -> None:
        flat: List[Any] = []
        for part in parts:
            if isinstance(part, Template):
                flat.extend(part.parts)
            elif isinstance(part, (str, Ref)):
                flat.append(part)
            else:
                raise TypeError(
                    "a reference combines with str or another reference, not %s"
                    % type(part).__name__
                )
        self.parts: List[Any] = flat

    def refs(self) -> List[Ref]:
        """The references in it, in order."""
        return [p for p in self.parts if isinstance(p, Ref)]

    def resolve(self) -> str:
        """The text with every reference resolved; ValueError if one is not known yet."""
        return "".join(p if isinstance(p, str) else p.resolve() for p in self.parts)

    def __add__(self, other: Any) -> Template:
        return Template([self, other])

    def __radd__(self, other: Any) -> Template:
        return Template([other, self])

    def __repr__(self) -> str:
        return "".join(
            p.replace("${", "$${") if isinstance(p, str) else repr(p) for p in self.parts
        )


def template(*parts: Any) -> Template:
    """``template("http://", api.ref("host"), ":8080/")``: the parts joined at start."""
    return Template(list(parts))


def interpolate(text: str, lookup: Lookup) -> Union[str, Ref, Template]:
    """``text`` with each ``${service.endpoint}`` made a reference found through ``lookup``.

    ``lookup`` finds a service's handle by name: a Stack, a mapping of names
    to handles, or a function returning None for an unknown name. Names are
    looked up when the stack checks its services (before anything starts),
    so they may be added after this call. Returns ``text`` itself (with
    ``$${`` made ``${``) when it holds no reference, the Ref alone when it
    is exactly one, a Template otherwise. A malformed placeholder is a
    ValueError naming it.
    """
    if not isinstance(text, str):
        raise TypeError("interpolate() needs a str, got %s" % type(text).__name__)
    parts: List[Any] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[last : match.start()])
        last = match.end()
        token = match.group(0)
        if token == "$${":
            parts.append("${")
        elif match.group(1) is None:
            raise ValueError("%r: '${' without a closing '}' (write '$${' for a literal)" % text)
        else:
            path = match.group(1).strip()
            if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+", path):
                raise ValueError(
                    "%r: ${%s} is not a reference; write ${service.endpoint}" % (text, path)
                )
            parts.append(Ref(path, lookup))
    parts.append(text[last:])
    parts = [p for p in parts if p != ""]
    if not any(isinstance(p, Ref) for p in parts):
        return "".join(parts)
    if len(parts) == 1:
        return parts[0]  # type: ignore[no-any-return]
    return Template(parts)


def refs_in(values: List[Any]) -> List[Ref]:
    """Every Ref in ``values`` (Deferred values as :func:`~remoteexec.services.deferred_in`
    finds them; a Template's references are inside it)."""
    out: List[Ref] = []
    for value in values:
        inner = getattr(value, "refs", None)
        if isinstance(value, (Ref, Template)) and callable(inner):
            out.extend(inner())
    return out


__all__ = ["Lookup", "Ref", "Target", "Template", "interpolate", "refs_in", "template"]
