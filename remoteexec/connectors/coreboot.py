"""mitogen's bootstrap with ``mitogen.core`` compiled once per host, not per context.

mitogen starts a context by piping the source of ``mitogen.core`` (~73 KB)
into a fresh interpreter, which compiles it: ~25 ms of CPU in every
context, the largest single cost of a warm connect. Here the preamble
carries the same source as one string literal (cheap to compile) and a
small loader that takes the compiled code from the host's bytecode cache
directory when a context of this user compiled that very source with that
very Python before, else compiles it and stores it there for the next one.

The same rules as :mod:`remoteexec.target.bytecache`: a 0700 directory of
the user (not a link, no group/other access), files opened without
following links, owned by the user, 0600, written under an exclusive
temporary name and renamed; a file is used only if it records the SHA-256
of the source the master sends now and the interpreter's bytecode magic,
and the SHA-256 of its content matches its header. Anything else is
compiled from the source, as mitogen does.

Only for contexts the master connects directly (a hop's intermediate
context starts its children with mitogen's own preamble).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Dict, Type

import mitogen.core
import mitogen.parent

#: What the preamble runs before mitogen's own last line: the loader, then
#: ``exec`` of ``mitogen.core``'s code in ``__main__`` (as when piped in).
LOADER = """\
def _rx_core(D, H, S):
    import os, stat, marshal
    try:
        from _sha256 import sha256 as X
    except ImportError:
        try:
            from _sha2 import sha256 as X
        except ImportError:
            X = None
    try:
        import _frozen_importlib_external as E
        G = E.MAGIC_NUMBER.hex()
    except (ImportError, AttributeError):
        G = None
    T = @MAGIC@
    P = None
    if X is not None and G is not None:
        try:
            D = os.path.expanduser(D)
            os.makedirs(D, 0o700, exist_ok=True)
            s = os.lstat(D)
            if stat.S_ISDIR(s.st_mode) and s.st_uid == os.getuid() and not s.st_mode & 0o77:
                P = os.path.join(D, "core-%s.bc" % X((H + G).encode()).hexdigest())
        except OSError:
            P = None
    if P is not None:
        try:
            f = os.open(P, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                s = os.fstat(f)
                B = "".encode()
                if stat.S_ISREG(s.st_mode) and s.st_uid == os.getuid() and not s.st_mode & 0o77:
                    while len(B) < s.st_size:
                        c = os.read(f, s.st_size - len(B))
                        if not c:
                            break
                        B += c
            finally:
                os.close(f)
            n = len(T) + 32
            if B[:len(T)] == T and X(B[n:]).digest() == B[len(T):n]:
                h, _, c = B[n:].partition("\\n".encode())
                if h == (H + G).encode():
                    return marshal.loads(c)
        except (OSError, ValueError, EOFError, TypeError):
            pass
    C = compile(S, "<stdin>", "exec")
    if P is not None:
        b = (H + G + "\\n").encode() + marshal.dumps(C)
        t = "%s.%d.tmp" % (P, os.getpid())
        try:
            f = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(f, T + X(b).digest() + b)
            finally:
                os.close(f)
            os.rename(t, P)
        except OSError:
            try:
                os.unlink(t)
            except OSError:
                pass
    return C
exec(_rx_core(@DIRECTORY@, @DIGEST@, @SOURCE@), globals())
del _rx_core
"""

#: The first bytes of a cached mitogen.core file.
MAGIC = b"RXCORE1\n"
_PARTIALS: Dict[str, Any] = {}
_CLASSES: Dict[Any, Type[Any]] = {}
_LOCK = threading.Lock()


def core_partial(directory: str) -> Any:
    """The compressed preamble up to mitogen's last line, for cache
    ``directory`` (built once per process: a mitogen ``PartialZlib``, so each
    connection only appends its own last line)."""
    with _LOCK:
        partial = _PARTIALS.get(directory)
        if partial is None:
            source = mitogen.parent._get_core_source()  # mitogen's minified core, as it sends it
            digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
            script = (
                LOADER.replace("@DIRECTORY@", repr(directory))
                .replace("@DIGEST@", repr(digest))
                .replace("@SOURCE@", repr(source))
                .replace("@MAGIC@", repr(MAGIC))
            )
            partial = mitogen.parent.PartialZlib(script.encode("utf-8"))
            _PARTIALS[directory] = partial
        return partial


class CachedCore:
    """Mixin for a mitogen Connection class: its preamble loads the compiled
    ``mitogen.core`` from the host's cache (see the module)."""

    core_cache: str = ""

    def get_preamble(self) -> bytes:
        suffix = "\nExternalContext(%r).main()\n" % (self.get_econtext_config(),)  # type: ignore[attr-defined]  # the Connection's
        return bytes(core_partial(self.core_cache).append(suffix.encode("utf-8")))


def connection_class(base: Type[Any], directory: str) -> Type[Any]:
    """mitogen Connection class ``base`` with the cached-core preamble for
    cache ``directory`` (one class per pair)."""
    with _LOCK:
        klass = _CLASSES.get((base, directory))
        if klass is None:
            klass = type(base.__name__, (CachedCore, base), {"core_cache": directory})
            _CLASSES[(base, directory)] = klass
        return klass


def available(router: Any) -> bool:
    """Whether this mitogen has what the cached core needs: two of its
    private names (``Router._connect``, ``parent._get_core_source``). A
    mitogen without them connects the usual way, compiling the core."""
    return all(
        (
            callable(getattr(router, "_connect", None)),
            callable(getattr(mitogen.parent, "_get_core_source", None)),
            callable(getattr(mitogen.parent, "PartialZlib", None)),
        )
    )


def connect(router: Any, base: Type[Any], directory: str, **kwargs: Any) -> Any:
    """``router.<method>(**kwargs)`` for a direct connection, with ``base``
    (``mitogen.ssh.Connection``, ``mitogen.parent.Connection``) made to load
    a cached ``mitogen.core``. The defaults are those of mitogen's
    ``Router.connect``, which only takes connection classes by module name."""
    kwargs.setdefault("debug", router.debug)
    kwargs.setdefault("profiling", router.profiling)
    kwargs.setdefault("unidirectional", router.unidirectional)
    kwargs.setdefault("name", None)
    klass = connection_class(base, directory)
    return router._connect(klass, **mitogen.core.Kwargs(kwargs))  # no public way to pass a class


__all__ = [
    "LOADER",
    "MAGIC",
    "CachedCore",
    "available",
    "connect",
    "connection_class",
    "core_partial",
]
