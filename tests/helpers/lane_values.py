"""Functions the lane's serialization tests run on lab hosts (stdlib only)."""

import os

#: 2 MiB of every byte value.
BIG = bytes(range(256)) * 8192


def sample() -> dict:
    """A value of every type either path carries, nested."""
    return {
        "bytes": b"\x00\xff raw \x80",
        "empty": b"",
        "str": "caf\u00e9 \u2603 \U0001f600",
        "int": -(2**70),
        "float": 0.1,
        "none": None,
        "bools": [True, False],
        "tuple": (1, (2, b"3"), ["4"]),
        "list": [b"a", "a", {b"k": [None, ()]}],
        b"bytes key": {"nested": {"deeper": [b"\x01" * 300]}},
        7: "int key",
    }


def echo(value: object) -> object:
    return value


def big() -> bytes:
    return BIG


def fails_with(data: bytes) -> None:
    raise ValueError("bad %r" % (data,))


class _RunsInTheReader:
    """Pickles as a call of os.getpid: whoever unpickles it unchecked runs
    that call (a compromised host's way to run code in the master)."""

    def __reduce__(self) -> tuple:
        return (os.getpid, ())


def runs_in_the_reader() -> object:
    return _RunsInTheReader()


def returns_a_set() -> set:
    return {1, 2}
