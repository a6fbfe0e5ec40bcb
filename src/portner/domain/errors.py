"""Errors the domain raises; adapters translate theirs into these at their boundary."""


class PortnerError(Exception):
    """Base of all errors Portner raises on purpose."""


class NaiveDatetimeError(PortnerError, ValueError):
    """A datetime without a zone reached the domain; we never guess the zone."""


class InvalidNationalId(PortnerError, ValueError):
    """A fødselsnummer or D-number failed its checks. The message never contains the number."""

