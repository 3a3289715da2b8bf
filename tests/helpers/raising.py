"""A function that raises, for Host.call tests (stdlib only: runs on lab hosts)."""


def fail_here(text: str) -> None:
    """Raise ValueError(text) from a line the test can name."""
    raise ValueError(text)  # RAISE-LINE
