"""Deterministic random streams keyed by names, independent of the order of use."""

from __future__ import annotations

import zlib

import numpy as np


def _key_int(key: object) -> int:
    if isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, (int, np.integer)):
        value = int(key)
        return value if value >= 0 else (1 << 64) + value
    if isinstance(key, float):
        return zlib.crc32(repr(key).encode())
    return zlib.crc32(str(key).encode("utf-8"))


def seed_sequence(*keys: object) -> np.random.SeedSequence:
    """A SeedSequence from a tuple of ints and strings (strings hashed with CRC32)."""
    return np.random.SeedSequence([_key_int(k) for k in keys])


def rng_for(*keys: object) -> np.random.Generator:
    """An independent numpy Generator for this tuple of keys."""
    return np.random.Generator(np.random.PCG64(seed_sequence(*keys)))


def derived_seed(*keys: object) -> int:
    """A 32-bit integer seed derived from keys (e.g. the i-th frame of a set)."""
    return int(seed_sequence(*keys).generate_state(1, dtype=np.uint32)[0])
