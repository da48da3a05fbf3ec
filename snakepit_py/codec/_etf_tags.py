"""The External Term Format's tag bytes, by the names erts gives them (``external.h``).

Every part of the ETF codec names tags from this one table; none writes a
tag's number.
"""

from __future__ import annotations

# -- framing
VERSION = 131  # the byte before every term (VERSION_MAGIC)
COMPRESSED = 80  # a zlib-deflated term follows (only at the top)

# -- numbers
SMALL_INTEGER_EXT = 97  # 0..255
INTEGER_EXT = 98  # signed 32-bit
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
NEW_FLOAT_EXT = 70  # IEEE 754 double
FLOAT_EXT = 99  # "%.20e" text, from old nodes

# -- atoms: latin-1 names (OTP 25 writes these), UTF-8 names (OTP 26 writes SMALL_ATOM_UTF8_EXT)
ATOM_EXT = 100
SMALL_ATOM_EXT = 115
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119

# -- binaries and containers
BINARY_EXT = 109
BIT_BINARY_EXT = 77  # refused: only whole bytes
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106  # []
STRING_EXT = 107  # a list of bytes
LIST_EXT = 108
MAP_EXT = 116

# -- opaque terms: pids, ports, references, funs
PID_EXT = 103
NEW_PID_EXT = 88
PORT_EXT = 102
NEW_PORT_EXT = 89
V4_PORT_EXT = 120
REFERENCE_EXT = 101
NEW_REFERENCE_EXT = 114
NEWER_REFERENCE_EXT = 90
NEW_FUN_EXT = 112
EXPORT_EXT = 113  # fun M:F/A

# -- distribution only (refused)
ATOM_CACHE_REF = 82
LOCAL_EXT = 121

PID_TAGS = frozenset((PID_EXT, NEW_PID_EXT))
PORT_TAGS = frozenset((PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT))
REFERENCE_TAGS = frozenset((REFERENCE_EXT, NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT))
FUN_TAGS = frozenset((NEW_FUN_EXT, EXPORT_EXT))
