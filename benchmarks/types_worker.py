"""The worker of bench_types.exs: a 1 MiB float32 array returned, and a binary echoed."""

import numpy as np

import snakepit_py as snakepit

ARRAY = np.linspace(0.0, 1.0, 262_144, dtype=np.float32)  # 1 MiB
BLOB = ARRAY.tobytes()  # the same 1 MiB as bytes: the C encoder's fast road


@snakepit.method
def echo(data):
    return data


@snakepit.method
def blob():
    return BLOB


@snakepit.method
def array():
    """The same 1 MiB array every time: what is measured is the bridge, not numpy."""
    return ARRAY


@snakepit.method
def array_copy():
    """A new 1 MiB array every call (numpy's own allocation and copy included)."""
    return ARRAY.copy()
