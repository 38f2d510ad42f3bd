"""Errors a user can act on: each message names the file, row or key at fault."""


class DokumiError(Exception):
    """Base class; the CLI prints the message on one line and exits non-zero."""


class InputError(DokumiError):
    """An input shard or record source that cannot be used as given."""


class PolicyError(DokumiError):
    """A policy recipe with an unknown key or a bad value."""


class OutputError(DokumiError):
    """The scan's outputs cannot be written (a full disk, a folder in the way)."""
