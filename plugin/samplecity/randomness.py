"""Independent, named random streams derived from the city seed.

Each stage draws from its own stream, so changing how much randomness one stage uses (or how
the VHR is chunked) never changes another stage's output.  No global numpy state is touched.
"""
import zlib

import numpy as np


def stream(seed, name, *extra):
    """A fresh Generator for (seed, name, *extra); same arguments -> same numbers."""
    key = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(e.encode("utf-8")) if isinstance(e, str)
                                      else int(e) for e in (name,) + extra]
    return np.random.default_rng(np.random.SeedSequence(key))
