"""Test workers from pytest with no BEAM: stub supervisors over the real protocol.

:class:`FakeSupervisor` starts ``python -m snakepit_py worker TARGET`` as a real
subprocess, speaks the wire protocol to it over pipes (as a BEAM Port) and
gives tests plain Python calls. :class:`GrpcSupervisor` has the same API and
speaks it over a gRPC Session on loopback (needs the ``grpc`` extra; grpc is
imported only when one starts). The pytest fixture ``snakepit_worker``
(installed with the package) starts one and stops it after the test::

    def test_add(snakepit_worker):
        sup = snakepit_worker("examples/hello_worker.py")
        assert sup.call("add", 1, 2) == 3
"""

from __future__ import annotations

from ._testing.calls import PendingCall, Stream
from ._testing.grpc import GrpcSupervisor
from ._testing.port import FakeSupervisor

__all__ = [
    # supervisors
    "FakeSupervisor",
    "GrpcSupervisor",
    # what a call returns
    "PendingCall",
    "Stream",
]
