"""One exception type for every user-facing error: the CLI prints its message on one line."""


class BenchError(Exception):
    """A bad input or a missing resource; the message is one line a researcher can act on."""
