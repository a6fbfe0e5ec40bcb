"""Portner: open, vendor-neutral door access for municipal home care."""

__version__ = "0.1.0"
