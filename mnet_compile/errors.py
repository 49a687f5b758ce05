"""The one exception type whose message the CLI prints on a single line."""


class MnetError(Exception):
    """A user-facing error: bad input, a missing tool, a damaged artifact."""
