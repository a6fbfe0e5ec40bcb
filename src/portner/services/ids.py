"""Pseudonymous identifiers: random, meaningless, and reproducible when the demo fixes a seed."""

from __future__ import annotations

import random
import secrets


class IdSource:
    """Hands out ids like "res-3f9c0a1b2c4d5e6f"; seeded for a reproducible demo, else secrets."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed) if seed is not None else None

    def token(self, nbytes: int) -> bytes:
        if self._rng is None:
            return secrets.token_bytes(nbytes)
        return self._rng.randbytes(nbytes)

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self.token(8).hex()}"
