"""How the Zigbee2MQTT adapter logs in to its broker and verifies it (pure configuration, no I/O
beyond reading a CA file).

PINs cross the broker in `/set` messages, so a production broker requires a login and TLS (see
docs/locks.md). Options `username` and `password` are passed to aiomqtt's Client; `mqtts://` builds
`ssl.create_default_context()`, which verifies the broker's certificate and hostname against the
system's trusted CAs, or against option `ca_file` (PEM) for a private CA. Nothing turns that off.
"""

from __future__ import annotations

import ssl

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def login(options: dict[str, str]) -> tuple[str | None, str | None]:
    username, password = options.get("username"), options.get("password")
    for name, value in (("username", username), ("password", password)):
        if value is not None and (not isinstance(value, str) or not value
                                  or any(ord(ch) < 32 for ch in value)):
            raise ValueError(f"option {name} must be non-empty text without control characters")
    if password is not None and username is None:
        raise ValueError("option password needs option username")
    return username, password


def tls_context(scheme: str, ca_file: str | None) -> ssl.SSLContext | None:
    """TLS for mqtts://: the default context verifies the broker's certificate and hostname."""
    if scheme != "mqtts":
        if ca_file is not None:
            raise ValueError("option ca_file needs an mqtts:// url")
        return None
    if ca_file is not None and (not isinstance(ca_file, str) or not ca_file):
        raise ValueError("option ca_file must be the path of a PEM file")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"option ca_file: cannot load {ca_file!r} ({type(exc).__name__})") from None
