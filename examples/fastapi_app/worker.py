"""The worker behind examples/fastapi_app/app.py: a toy model served over gRPC.

    SNAKEPIT_GRPC_TOKEN=s3cret snakepit-py worker worker.py --grpc 127.0.0.1:0
    SNAKEPIT_READY grpc 127.0.0.1:40513

``predict`` scores a feature vector, ``count`` streams ``n`` chunks. Both take
an optional ``delay`` (seconds) so that timeouts, cancels and a worker killed
mid-call can be tried by hand; the sleeps are in small steps so a cancel lands
quickly.
"""

import os
import time

import snakepit_py as snakepit


def _pause(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.01, max(0.0, end - time.monotonic())))


class Model:
    def __init__(self):
        self.weights = [0.5, -0.25, 0.125]
        self.served = 0

    @snakepit.method
    def predict(self, features: list[float], delay: float = 0.0) -> dict:
        """A score for ``features`` (a weighted sum); ValueError if there are none."""
        if not features:
            raise ValueError("features must not be empty")
        _pause(delay)
        self.served += 1
        w = self.weights
        score = sum(x * w[i % len(w)] for i, x in enumerate(features))
        return {"score": score, "n_features": len(features), "pid": os.getpid()}

    @snakepit.method
    def count(self, n: int, delay: float = 0.0):
        """Stream ``{"i": 0}`` ... ``{"i": n - 1}``, ``delay`` seconds apart; returns the total."""
        total = 0
        for i in range(n):
            if i:
                _pause(delay)
            total += i
            yield {"i": i}
        return {"n": n, "total": total, "pid": os.getpid()}

    @snakepit.method
    def stats(self) -> dict:
        """How many predictions this worker process has served."""
        return {"served": self.served, "pid": os.getpid()}


if __name__ == "__main__":
    snakepit.run()
