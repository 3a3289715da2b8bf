"""mitogen's bootstrap without the big preamble: ``mitogen.core`` read raw, compiled once.

mitogen starts a context by piping the source of ``mitogen.core`` (~160 KB,
minified) into a fresh interpreter as its script. That costs the context,
in every connection, raw mitogen included: ~50-60 ms of CPU for the
interpreter to read a script that size from a pipe (its tokenizer reads
stdin slowly: ~0.35 ms per KB), ~30-40 ms to compile it, and ~18 ms for
mitogen's importer to compress the source again (level 9) for the
context's own children.

Here the script piped in is a small loader (~3 KB). Right behind the
preamble, on the same channel, the master sends a *payload* the loader
reads raw from the connection (``os.read``, no tokenizer): ``mitogen.core``
compiled by the master's Python, and its source, both zlib-compressed
once per master process. The loader then

1. loads the master's code when the host's Python has the master's bytecode
   magic (~1 ms);
2. else takes the code from the host's bytecode cache directory, when a
   context of this user compiled that very source with that very Python
   before;
3. else compiles the source, as mitogen does, and stores the code there for
   the next context.

The compressed source is handed to mitogen's importer as is (what it would
otherwise compress itself), so this context can still start children of
its own (a hop) with the real ``mitogen.core``.

The cache follows the rules of :mod:`remoteexec.target.bytecache`: a 0700
directory of the user (not a link, no group/other access), files opened
without following links, owned by the user, 0600, written under an
exclusive temporary name and renamed; a file is used only if it records the
SHA-256 of the source the master sends now and the interpreter's bytecode
magic, and the SHA-256 of its content matches its header. Anything else is
compiled from the source.

Only for contexts the master connects directly (a hop's intermediate
context starts its children with mitogen's own preamble).
"""

from __future__ import annotations

import binascii
import hashlib
import importlib.util
import marshal
import threading
import zlib
from typing import Any, Dict, List, Tuple, Type

import mitogen.core
import mitogen.parent

#: The script piped into the fresh interpreter, before the line that starts
#: the context: it reads the payload from the connection (fd 100, where
#: mitogen's first stage leaves it), gets the code (master's, cache, or
#: compiled) and ``exec``s it in ``__main__`` (as when piped in). Before
#: that, it puts placeholders in ``sys.modules`` for :data:`LATER`.
LOADER = """\
import os, sys
def _rx_core(D, H, M, KN, ZN):
    import stat, marshal, select, zlib
    B = "".encode()
    while len(B) < KN + ZN:
        select.select([100], [], [])
        c = os.read(100, KN + ZN - len(B))
        if not c:
            raise EOFError("mitogen.core payload cut short")
        B += c
    K, Z = B[:KN], B[KN:]
    try:
        os.close(101)  # mitogen's first stage's copy of the preamble, if it ran
    except OSError:
        pass
    try:
        import _frozen_importlib_external as E
        G = E.MAGIC_NUMBER.hex()
    except (ImportError, AttributeError):
        G = None
    if K and G is not None and M == G:
        try:
            return marshal.loads(zlib.decompress(K)), Z
        except (ValueError, EOFError, TypeError, zlib.error):
            pass
    try:
        from _sha256 import sha256 as X
    except ImportError:
        try:
            from _sha2 import sha256 as X
        except ImportError:
            X = None
    T = @MAGIC@
    P = None
    if D and X is not None and G is not None:
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
                    return marshal.loads(c), Z
        except (OSError, ValueError, EOFError, TypeError):
            pass
    C = compile(zlib.decompress(Z), "<stdin>", "exec")
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
    return C, Z
class _RxLater(type(os)):
    def __getattr__(self, attr):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(__import__("importlib").import_module(self.__name__), attr)
def _rx_later(*names):
    from importlib.machinery import ModuleSpec
    for n in names:
        if n not in sys.modules:
            m = sys.modules[n] = _RxLater(n)
            m.__spec__ = ModuleSpec(n, None)
_rx_later(*@LATER@)
_rx_code, _rx_source = _rx_core(@DIRECTORY@, @DIGEST@, @CODE_MAGIC@, @CODE_SIZE@, @SOURCE_SIZE@)
exec(_rx_code, globals())
del _rx_core, _rx_code, _rx_later
class _RxContext(ExternalContext):
    def _setup_importer(self):
        ExternalContext._setup_importer(self)
        self.importer._cache["mitogen.core"] = (
            "mitogen.core", None, "x/mitogen/core.py", _rx_source, [])
"""

#: Modules mitogen imports at the top of ``mitogen.core`` (pstats, cProfile)
#: and ``mitogen.service`` (pprint) for its profiling hook and one error
#: message only; with them come dataclasses, inspect, ast, dis, copy: ~10 ms
#: of CPU and ~1.5 MB in every context. The loader's placeholders import the
#: real module at the first use of one of its attributes.
LATER = ("pstats", "cProfile", "pprint")
#: The first bytes of a cached mitogen.core file.
MAGIC = b"RXCORE1\n"
#: Whether the payload carries ``mitogen.core`` compiled by the master's
#: Python (see :func:`core_code`); the host uses it when its bytecode magic
#: is the master's. Off: the host's cache, or its compiler.
SHIP_COMPILED = True


class Boot:
    """The preamble and payload for one cache directory (built once per
    process and setting: the compiles and compressions are paid once)."""

    def __init__(self, directory: str, ship: bool) -> None:
        source = mitogen.parent._get_core_source()  # mitogen's minified core, as it sends it
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        code = zlib.compress(marshal.dumps(core_code(source)), 9) if ship else b""
        compressed = zlib.compress(source.encode("utf-8"), 9)
        script = (
            LOADER.replace("@DIRECTORY@", repr(directory))
            .replace("@DIGEST@", repr(digest))
            .replace("@CODE_MAGIC@", repr(importlib.util.MAGIC_NUMBER.hex()))
            .replace("@CODE_SIZE@", str(len(code)))
            .replace("@SOURCE_SIZE@", str(len(compressed)))
            .replace("@MAGIC@", repr(MAGIC))
            .replace("@LATER@", repr(LATER))
        )
        #: The loader, compressed up to the last line (mitogen's ``PartialZlib``:
        #: each connection only appends its own).
        self.partial = mitogen.parent.PartialZlib(script.encode("utf-8"))
        #: What the master writes right after the preamble.
        self.payload = code + compressed


_BOOTS: Dict[Tuple[str, bool], Boot] = {}
_CLASSES: Dict[Any, Type[Any]] = {}
_LOCK = threading.Lock()


def core_code(source: str) -> Any:
    """``mitogen.core``'s code as a host compiles it from ``source`` (the
    preamble's file name, no inherited ``__future__`` flags, no -O)."""
    return compile(source, "<stdin>", "exec", dont_inherit=True, optimize=0)


def boot(directory: str) -> Boot:
    """The :class:`Boot` for cache ``directory`` under :data:`SHIP_COMPILED`."""
    key = (directory, SHIP_COMPILED)
    with _LOCK:
        found = _BOOTS.get(key)
        if found is None:
            found = _BOOTS[key] = Boot(*key)
        return found


def write_boot(protocol: Any, line: bytes, match: Any) -> None:  # noqa: ARG001 - mitogen's signature
    """What mitogen's bootstrap does when the first stage is ready (write the
    preamble), plus the payload right behind it."""
    conn = protocol.stream.conn
    protocol._writer.write(conn.get_preamble() + boot(conn.core_cache).payload)


class BootProtocol(mitogen.parent.BootstrapProtocol):  # type: ignore[misc]  # mitogen is untyped
    """mitogen's bootstrap protocol, writing the payload right after the preamble."""

    PATTERNS = [
        (pattern, write_boot if func is mitogen.parent.BootstrapProtocol._on_ec0_received else func)
        for pattern, func in mitogen.parent.BootstrapProtocol.PATTERNS
    ]


#: remoteexec's first stage, run by mitogen's ``-c`` stub (which imported
#: os, select, sys and zlib). mitogen's forks: the child feeds the preamble
#: to the parent, which re-executes the interpreter to read it as its
#: script (a second interpreter start-up: ~12-15 ms of CPU, and the slow
#: stdin tokenizer). This one reads the preamble itself, leaves the
#: connection on fd 100 where mitogen expects it (the payload follows
#: there), and runs the preamble in the same process.
FIRST_STAGE = """\
os.write(1, "MITO000\\n".encode())
_rx_n = int(sys.argv[3])
_rx_c = "".encode()
_rx_v = "V"
while _rx_n - len(_rx_c) and _rx_v:
    select.select([0], [], [])
    _rx_v = os.read(0, _rx_n - len(_rx_c))
    _rx_c += _rx_v
os.dup2(0, 100)
os.write(1, "MITO001\\n".encode())
_rx_c = compile(zlib.decompress(_rx_c), "<stdin>", "exec")
del _rx_n, _rx_v
exec(_rx_c)
"""


def encoded_first_stage() -> str:
    """:data:`FIRST_STAGE` as mitogen's stub takes it: raw deflate, base64."""
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(FIRST_STAGE.encode()) + compressor.flush()
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class FastBoot(mitogen.parent.Connection):  # type: ignore[misc]  # mitogen is untyped
    """mitogen's boot command (its ``-c`` stub, taken from mitogen once per
    process: it reads and tokenizes its own source for it at every
    connection, ~1-2 ms of the master's CPU) running :data:`FIRST_STAGE`.
    The process shows ``(mitogen:<name>)`` in its command line, as
    mitogen's re-executed one does."""

    def get_boot_command(self) -> List[str]:
        argv: List[str] = self.get_python_argv()
        with _LOCK:
            stub = _STUBS.get(tuple(argv))
        if stub is None:
            full: List[str] = mitogen.parent.Connection.get_boot_command(self)
            if full[: len(argv)] != argv or len(full) != len(argv) + 5 or full[len(argv)] != "-c":
                return full  # not the shape this expects: mitogen's own first stage
            stub = full[len(argv) + 1]
            with _LOCK:
                _STUBS[tuple(argv)] = stub
        name = "(mitogen:%s)" % (self.options.remote_name,)
        return [*argv, "-c", stub, _ENCODED, name, str(len(self.get_preamble()))]


_ENCODED = encoded_first_stage()
#: mitogen's ``-c`` stub, per python argv.
_STUBS: Dict[Tuple[str, ...], str] = {}


class CachedCore:
    """Mixin for a mitogen Connection class: its preamble loads the compiled
    ``mitogen.core`` from the host's cache (see the module)."""

    core_cache: str = ""
    stream_protocol_class = BootProtocol

    def get_preamble(self) -> bytes:
        # The importer gets mitogen.core's source from the loader, not fd 101.
        config = dict(self.get_econtext_config(), core_src_fd=None)  # type: ignore[attr-defined]  # the Connection's
        suffix = "\n_RxContext(%r).main()\n" % (config,)
        return bytes(boot(self.core_cache).partial.append(suffix.encode("utf-8")))


def connection_class(base: Type[Any], directory: str) -> Type[Any]:
    """mitogen Connection class ``base`` with the cached-core preamble for
    cache ``directory`` (one class per pair)."""
    with _LOCK:
        klass = _CLASSES.get((base, directory))
        if klass is None:
            # FastBoot right above mitogen's Connection: ssh's command wraps it.
            bases: Tuple[type, ...] = (CachedCore, FastBoot)
            if base is not mitogen.parent.Connection:
                bases = (CachedCore, base, FastBoot)
            klass = type(base.__name__, bases, {"core_cache": directory})
            _CLASSES[(base, directory)] = klass
        return klass


#: The mitogen releases this bootstrap was tested with (it leans on their
#: private names and boot protocol): at least the first, below the second.
TESTED_MITOGEN = ((0, 3, 54), (0, 4))


def available(router: Any) -> bool:
    """Whether this mitogen is one this bootstrap was tested with
    (:data:`TESTED_MITOGEN`) and has the private names it uses
    (``Router._connect``, ``parent._get_core_source``, the bootstrap
    protocol's first-stage handler). Any other mitogen connects the usual
    way, compiling the core on the host."""
    version = tuple(getattr(mitogen, "__version__", ()))
    low, high = TESTED_MITOGEN
    return low <= version < high and all(
        (
            callable(getattr(router, "_connect", None)),
            callable(getattr(mitogen.parent, "_get_core_source", None)),
            callable(getattr(mitogen.parent, "PartialZlib", None)),
            callable(getattr(mitogen.parent.BootstrapProtocol, "_on_ec0_received", None)),
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
    "FIRST_STAGE",
    "LATER",
    "LOADER",
    "MAGIC",
    "SHIP_COMPILED",
    "TESTED_MITOGEN",
    "Boot",
    "BootProtocol",
    "CachedCore",
    "FastBoot",
    "available",
    "boot",
    "connect",
    "connection_class",
    "core_code",
    "encoded_first_stage",
    "write_boot",
]
