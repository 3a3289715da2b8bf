"""A content-addressed bytecode cache for our target modules, on the target.

mitogen ships every module a context imports as source, and the context
compiles it: for the supervisor's ~20 modules that is ~50 KB over the wire
and ~20 ms of CPU in every context, paid again by every master. With this
cache, the master first sends a manifest (module name, path, SHA-256 of the
source it would ship); :func:`prime` puts a finder in front of mitogen's
importer that loads each listed module from a cache file compiled earlier
on this host, or, on a miss, lets mitogen fetch the source as usual,
compiles it once and writes the file for the next context.

Safety (see docs/more/security.md):

- the directory is created 0700 and used only when it is a real directory
  (not a link) owned by this uid with no group/other access; files are
  written 0600 under a temporary name created exclusively, then renamed,
  and read only when they are regular files of this uid, 0600;
- a file is named after the hash of (module, path, source hash, the
  interpreter's bytecode magic), and is used only if it still records that
  very source hash and magic, and the SHA-256 of its content matches the
  digest in its header: a file is never trusted by its name alone. Anything
  else is refused, counted, removed and replaced;
- only modules the master listed, with the hash of the source it holds,
  are ever served: a file cannot add or replace code the master did not
  send before.

The modules install imports are kept together in one *pack* file (named
after the manifest's entries for them and the magic): each module's
cache file as above, one after the other behind an index; every one is
checked like a file of its own (:func:`unpack`, then :func:`decode`), and a
pack with a bad entry is removed and written again. One file, because
creating files is most of what a cold host's cache costs. The modules
imported later (Tarantool's) have a file each.

The modules the cache lacks come compiled from the master when it runs the
very same Python version (:func:`take_compiled`): a cold context then
compiles nothing either; else as source, compiled here once.

Imports only the standard library and mitogen.core: it runs before the rest.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
import threading
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mitogen.core


def builtin_sha256() -> Any:
    """The interpreter's builtin SHA-256 (``_sha256``; ``_sha2`` from 3.12):
    hashlib would load OpenSSL, ~4 MB more in every context."""
    for name in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            pass
    import hashlib  # pragma: no cover - a build without the builtin one

    return hashlib.sha256  # pragma: no cover


sha256 = builtin_sha256()
#: Where the cache lives on the target when the master names none.
DEFAULT_DIR = "~/.cache/remoteexec/bytecode"
MAGIC = b"RXBC1\n"
DIGEST = 32
#: One manifest entry: (module name, path on the master, SHA-256 hex of its
#: file there, whether mitogen ships that file unchanged: it minifies its own).
Entry = Tuple[str, str, str, bool]


def key(name: str, path: str, source_hash: str) -> str:
    """The file name of one module's entry for this interpreter."""
    text = "\0".join([name, path, source_hash, importlib.util.MAGIC_NUMBER.hex()])
    return sha256(text.encode()).hexdigest() + ".bc"


#: The first bytes of a pack file.
PACK_MAGIC = b"RXPK1\n"


def pack_key(entries: Sequence[Entry]) -> str:
    """The file name of the pack of ``entries`` (the modules install imports)
    for this interpreter: another manifest, another pack."""
    parts = ["pack", importlib.util.MAGIC_NUMBER.hex()]
    parts += ["%s\0%s\0%s" % (e[0], e[1], e[2]) for e in sorted(entries)]
    return "pack-" + sha256("\0".join(parts).encode()).hexdigest() + ".bc"


def pack(blobs: Dict[str, bytes]) -> bytes:
    """One file holding several modules' cache files (:func:`encode`): an
    index (a line ``name size`` each, then a blank line), then the files in
    that order. One file to create instead of one per module: creating files
    is what a cold host's cache costs most (~0.5 ms of CPU each on the lab's
    bind-mounted homes)."""
    index = b"".join(b"%s %d\n" % (name.encode(), len(blob)) for name, blob in blobs.items())
    return PACK_MAGIC + index + b"\n" + b"".join(blobs.values())


def unpack(data: bytes) -> Dict[str, bytes]:
    """The cache files in a pack, by module name ({} if ``data`` is not a
    well-formed pack). Each is still to be checked with :func:`decode`: the
    index only says where a module's file is, never that it is good."""
    if not data.startswith(PACK_MAGIC):
        return {}
    index, sep, rest = data[len(PACK_MAGIC) :].partition(b"\n\n")
    if not sep:
        return {}
    found: Dict[str, bytes] = {}
    at = 0
    for line in index.split(b"\n"):
        name, _, size = line.partition(b" ")
        if not size.isdigit() or at + int(size) > len(rest):
            return {}
        found[name.decode("utf-8", "replace")] = rest[at : at + int(size)]
        at += int(size)
    return found


def private_dir(path: str) -> Optional[str]:
    """``path`` (``~`` expanded), created 0700 if missing; None unless it is a
    real directory of this uid that no one else may enter."""
    path = os.path.expanduser(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def encode(source_hash: str, code: Any, source: str) -> bytes:
    """A cache file: header, digest of the body, body (hash, magic, code, source)."""
    code_bytes = marshal.dumps(code)
    head = b"\0".join(
        [source_hash.encode(), importlib.util.MAGIC_NUMBER.hex().encode(), b"%d" % len(code_bytes)]
    )
    body = head + b"\n" + code_bytes + zlib.compress(source.encode("utf-8"), 1)
    return MAGIC + sha256(body).digest() + body


def decode(data: bytes, source_hash: str) -> Optional[Tuple[Any, bytes]]:
    """(code, compressed source) from a cache file's bytes, or None when
    anything is off. The source stays compressed until someone asks for it
    (a traceback, the guard's payload): ~4x less memory held per module."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + DIGEST + 4:
        return None
    digest = data[len(MAGIC) : len(MAGIC) + DIGEST]
    body = data[len(MAGIC) + DIGEST :]
    if sha256(body).digest() != digest:
        return None
    head, sep, rest = body.partition(b"\n")
    fields = head.split(b"\0")
    if not sep or len(fields) != 3 or not fields[2].isdigit():
        return None
    if fields[0] != source_hash.encode():
        return None
    if fields[1] != importlib.util.MAGIC_NUMBER.hex().encode():
        return None
    size = int(fields[2])
    try:
        code = marshal.loads(rest[:size])
    except (ValueError, EOFError, TypeError):
        return None
    return code, rest[size:]


def read_private(path: str) -> Optional[bytes]:
    """The bytes of the regular file ``path`` if this uid owns it and only it
    may read or write it (opened without following links); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def write_private(path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` 0600, atomically (exclusive temporary name,
    then rename); False when it could not be written (the cache is a help,
    never a reason to fail an import)."""
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False


class CacheFinder:
    """Serves the manifest's modules from the cache; on a miss, has mitogen's
    importer fetch the source, compiles it once and stores it."""

    def __init__(self, directory: str, entries: Sequence[Entry], importer: Any) -> None:
        self.directory = directory
        self.entries: Dict[str, Tuple[str, str, bool]] = {e[0]: (e[1], e[2], e[3]) for e in entries}
        self.importer = importer
        self.lock = threading.Lock()
        #: Modules loaded from the cache / the cache lacked (loaded from the
        #: master) / files refused / of those the cache lacked, the ones the
        #: master sent compiled (no compile here).
        self.stats: Dict[str, List[str]] = {
            "hits": [],
            "misses": [],
            "refused": [],
            "precompiled": [],
        }
        #: (code, compressed source, "hits" or "precompiled") of the modules
        #: found in the pack or sent compiled by the master, checked, kept
        #: until imported.
        self.preloaded: Dict[str, Tuple[Any, bytes, str]] = {}
        #: The pack of the modules install imports (see :meth:`load_pack`).
        self.pack_file: Optional[str] = None
        #: The checked cache files of the pack, to write again with the
        #: modules the master adds.
        self.packed: Dict[str, bytes] = {}
        #: Compressed sources of the modules loaded from the cache.
        self._sources: Dict[str, bytes] = {}
        self._code: Dict[str, Any] = {}

    def find_spec(  # the MetaPathFinder signature
        self,
        fullname: str,
        path: Any = None,  # noqa: ARG002
        target: Any = None,  # noqa: ARG002
    ) -> Any:
        entry = self.entries.get(fullname)
        if entry is None or fullname in sys.modules:
            return None
        parent = fullname.rpartition(".")[0]
        if parent and parent not in sys.modules:
            return None  # imported through its package, which comes first
        origin = "master:" + entry[0]
        return importlib.machinery.ModuleSpec(fullname, self, origin=origin)  # type: ignore[arg-type]  # a Loader by protocol

    def file(self, fullname: str) -> str:
        path, source_hash, _ = self.entries[fullname]
        return os.path.join(self.directory, key(fullname, path, source_hash))

    def load_pack(self, names: Sequence[str]) -> List[str]:
        """Read the pack of ``names`` (one file) and check each of its
        modules (:func:`decode`); keep the good ones for their imports;
        return the names the pack served. A pack with a bad entry is
        removed (the modules it lacks are then asked for, and a new pack
        written)."""
        listed = [(n, *self.entries[n]) for n in names if n in self.entries]
        if not listed:
            return []
        self.pack_file = os.path.join(self.directory, pack_key(listed))
        data = read_private(self.pack_file)
        blobs = unpack(data) if data is not None else {}
        bad = data is not None and not blobs
        for name, *_ in listed:
            blob = blobs.get(name)
            if blob is None:
                continue
            found = decode(blob, self.entries[name][1])
            if found is None:
                bad = True
                self._note("refused", name)
                continue
            self.preloaded[name] = (*found, "hits")
            self.packed[name] = blob
        if bad:
            with contextlib.suppress(OSError):
                os.unlink(self.pack_file)
        return list(self.packed)

    def store_pack(self, blobs: Dict[str, bytes]) -> None:
        """Write the pack again with ``blobs`` (checked cache files) added."""
        if self.pack_file is not None and blobs:
            self.packed.update(blobs)
            write_private(self.pack_file, pack(self.packed))

    def create_module(self, spec: Any) -> Any:
        kept = self.preloaded.pop(spec.name, None)
        if kept is not None:
            if kept[2] == "precompiled":
                self._note("misses", spec.name)
            self._note(kept[2], spec.name)
            self._code[spec.name], self._sources[spec.name] = kept[0], kept[1]
            return None
        data = read_private(self.file(spec.name))
        found = decode(data, self.entries[spec.name][1]) if data is not None else None
        if found is None and data is not None:
            self._note("refused", spec.name)
            with contextlib.suppress(OSError):
                os.unlink(self.file(spec.name))
        if found is not None:
            self._note("hits", spec.name)
            self._code[spec.name], self._sources[spec.name] = found
            return None  # the default module object
        # A miss: mitogen fetches the source (and, in the same reply batch,
        # the modules this one imports).
        return self.importer.create_module(spec)

    def exec_module(self, module: Any) -> None:
        name = module.__spec__.name
        module.__file__ = module.__spec__.origin
        code = self._code.pop(name, None)
        if code is None:
            source = self.importer.get_source(name)
            code = compile(source, module.__spec__.origin, "exec", flags=0, dont_inherit=True)
            self._note("misses", name)
            _, source_hash, exact = self.entries[name]
            # Stored only if mitogen sent the very source the manifest names
            # (a file edited on the master in between is not cached). mitogen's
            # own modules arrive minified: deterministic for the same file.
            sent = sha256(source.encode("utf-8")).hexdigest()
            if sent == source_hash or not exact:
                write_private(self.file(name), encode(source_hash, code, source))
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> Optional[str]:
        """The module's source: for tracebacks, and for the guard's payload."""
        compressed = self._sources.get(fullname)
        if compressed is None:  # a miss: mitogen's importer holds it
            source = self.importer.get_source(fullname)
            return source if isinstance(source, str) else None
        return zlib.decompress(compressed).decode("utf-8")

    def _note(self, what: str, name: str) -> None:
        with self.lock:
            self.stats[what].append(name)


_FINDER: Optional[CacheFinder] = None


def mitogen_importer() -> Any:
    for finder in sys.meta_path:
        if type(finder).__name__ == "Importer" and type(finder).__module__ == "mitogen.core":
            return finder
    return None


@mitogen.core.takes_econtext  # type: ignore[untyped-decorator]  # mitogen is untyped
def prime(
    directory: str,
    entries: Sequence[Entry],
    fetch: Sequence[str] = (),
    code_handle: Optional[int] = None,
    econtext: Any = None,
) -> Dict[str, Any]:
    """Serve ``entries`` from the cache in ``directory`` from now on (once per
    context); return where the cache is, how many entries it holds and the
    names it lacks.

    The modules of ``fetch`` (those the next call imports) that the cache
    lacks are got from the master here, all at once: compiled, from the
    master's ``code_handle`` (one round trip; used only when compiled by
    this very Python version, checked like any cache file, and stored in
    the pack with those it held), or
    else as source through mitogen's importer, asked for all at once: the
    imports that follow find them arrived or in flight.
    """
    global _FINDER
    if _FINDER is not None:
        return report()
    importer = mitogen_importer()
    path = private_dir(directory)
    if path is None or importer is None:
        missing = [e[0] for e in entries]
    else:
        _FINDER = CacheFinder(path, entries, importer)
        sys.meta_path.insert(0, _FINDER)
        packed = set(_FINDER.load_pack(fetch))
        missing = [
            e[0] for e in entries if e[0] not in packed and not os.path.exists(_FINDER.file(e[0]))
        ]
    lacking = set(missing)
    wanted = [n for n in fetch if n in lacking]
    if wanted and _FINDER is not None and code_handle is not None and econtext is not None:
        wanted = take_compiled(_FINDER, econtext.parent, code_handle, wanted)
    if importer is not None:
        for name in wanted:
            # mitogen's importer: one GET_MODULE each, unless the module came
            # or is on its way; an import of it then waits for it.
            importer._request_module(name, _arrived)  # no public way to prefetch
    return {
        "dir": path,
        "cached": len(entries) - len(missing),
        "listed": len(entries),
        "missing": missing,
    }


#: How long prime waits for the master's compiled modules before it falls
#: back to mitogen's source (the master answers at once, from its broker).
COMPILED_WAIT = 30.0


def take_compiled(
    finder: CacheFinder, parent: Any, code_handle: int, names: Sequence[str]
) -> List[str]:
    """Ask the master (``parent``) for ``names`` compiled; store in the cache
    and keep for the imports each one that checks out (:func:`decode`: this
    Python's magic, the manifest's source hash, the digest); return the
    names still lacking."""
    try:
        msg = mitogen.core.Message.pickled(list(names), handle=code_handle)
        sent: Any = parent.send_await(msg, deadline=COMPILED_WAIT)
    except (mitogen.core.Error, mitogen.core.ChannelError, mitogen.core.TimeoutError):
        return list(names)
    if not isinstance(sent, dict):
        return list(names)
    left = []
    good: Dict[str, bytes] = {}
    for name in names:
        packed = sent.get(name)
        try:
            data = zlib.decompress(packed) if isinstance(packed, bytes) else None
        except zlib.error:
            data = None
        found = decode(data, finder.entries[name][1]) if data is not None else None
        if data is None or found is None:
            left.append(name)
            continue
        finder.preloaded[name] = (*found, "precompiled")
        good[name] = data
    finder.store_pack(good)  # one file for all of them
    return left


def _arrived() -> None:
    """A prefetched module came: nothing to do, its import takes it."""


def report() -> Dict[str, Any]:
    """What the cache did in this context: modules hit, missed, refused."""
    if _FINDER is None:
        return {"dir": None, "hits": [], "misses": [], "refused": [], "precompiled": []}
    with _FINDER.lock:
        return {"dir": _FINDER.directory, **{k: list(v) for k, v in _FINDER.stats.items()}}


def loaded(prefix: str = "") -> List[str]:
    """The modules imported in this context whose name starts with ``prefix``:
    shows what a context loaded, and that feature modules stay unloaded."""
    return sorted(name for name in list(sys.modules) if name.startswith(prefix))


def clear(directory: str = DEFAULT_DIR) -> int:
    """Remove every cache file in ``directory``; return how many."""
    path = os.path.expanduser(directory)
    removed = 0
    try:
        names = os.listdir(path)
    except OSError:
        return 0
    for name in names:
        if name.endswith(".bc") or name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(path, name))
                removed += 1
            except OSError:
                pass
    return removed


__all__ = [
    "DEFAULT_DIR",
    "PACK_MAGIC",
    "CacheFinder",
    "builtin_sha256",
    "clear",
    "decode",
    "encode",
    "key",
    "loaded",
    "pack",
    "pack_key",
    "prime",
    "private_dir",
    "read_private",
    "report",
    "unpack",
    "write_private",
]
