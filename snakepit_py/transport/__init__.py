"""Transports: how frames reach the dispatcher (``port``; ``grpc`` with the grpc extra)."""
