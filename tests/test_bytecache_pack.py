"""The bytecode cache's pack file: its format, read without the lab."""

from __future__ import annotations

from remoteexec.target import bytecache


def _blob(name: str) -> bytes:
    source = "NAME = %r\n" % name
    digest = bytecache.sha256(source.encode()).hexdigest()
    return bytecache.encode(digest, compile(source, name, "exec"), source)


def test_a_pack_gives_back_each_module_file_as_written() -> None:
    blobs = {"a.x": _blob("a.x"), "b.y": _blob("b.y")}
    assert bytecache.unpack(bytecache.pack(blobs)) == blobs


def test_a_malformed_pack_gives_nothing() -> None:
    good = bytecache.pack({"a.x": _blob("a.x"), "b.y": _blob("b.y")})
    for bad in (
        b"",
        b"junk",
        good[:-1],  # the last file cut short
        good.replace(b"\n\n", b"\n", 1),  # no end of index
        good.replace(bytecache.PACK_MAGIC, b"RXPK0\n", 1),
        good.replace(b"a.x ", b"a.x -", 1),
    ):
        assert bytecache.unpack(bad) == {}, bad


def test_a_pack_entry_is_checked_like_any_cache_file() -> None:
    """The index only says where a module's file is: decode() still checks
    the source hash, so another module's file under a name is refused."""
    blobs = bytecache.unpack(bytecache.pack({"a.x": _blob("b.y")}))
    wanted = bytecache.sha256(b"NAME = 'a.x'\n").hexdigest()
    assert bytecache.decode(blobs["a.x"], wanted) is None
    other = bytecache.sha256(b"NAME = 'b.y'\n").hexdigest()
    assert bytecache.decode(blobs["a.x"], other) is not None


def test_the_pack_name_follows_the_manifest() -> None:
    entries = [("a.x", "/p/a.py", "1" * 64, True), ("b.y", "/p/b.py", "2" * 64, True)]
    name = bytecache.pack_key(entries)
    assert name.startswith("pack-") and name.endswith(".bc")
    assert bytecache.pack_key(list(reversed(entries))) == name
    changed = [entries[0], ("b.y", "/p/b.py", "3" * 64, True)]
    assert bytecache.pack_key(changed) != name
