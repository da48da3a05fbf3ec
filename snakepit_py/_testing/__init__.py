"""The parts behind :mod:`snakepit_py.testing` (import from there, not from here).

``calls``: the handles a test holds (PendingCall, Stream); ``core``: what both
stub supervisors share (command line, call bookkeeping, decoded messages,
captured output); ``port``: FakeSupervisor over pipes; ``grpc``:
GrpcSupervisor over a gRPC Session on loopback.
"""
