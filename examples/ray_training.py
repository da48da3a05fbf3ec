"""A small training job on Ray: a parameter-server actor plus a generator task
that streams one progress report per epoch.

    snakepit-py worker snakepit_py.ray_proxy -- --ray-address local --tasks examples/ray_training.py

The model is a straight line fitted by gradient descent (no ML library needed);
the shape is the real one: state in an actor, work in tasks, progress streamed
to the BEAM while it runs. Run ``python examples/ray_training.py`` for a demo
with no BEAM; ``examples/elixir/ray_training.exs`` is the Elixir side.
"""

from __future__ import annotations

import random

from snakepit_py import ray_proxy


@ray_proxy.actor
class ParameterServer:
    """Holds the model (w, b) and applies gradient steps."""

    def __init__(self, lr: float = 0.05) -> None:
        self.w, self.b, self.lr, self.steps = 0.0, 0.0, lr, 0

    def weights(self) -> dict:
        return {"w": self.w, "b": self.b, "steps": self.steps}

    def apply(self, grad_w: float, grad_b: float) -> dict:
        self.w -= self.lr * grad_w
        self.b -= self.lr * grad_b
        self.steps += 1
        return self.weights()


@ray_proxy.task
def train(server_id: str, epochs: int = 20, samples: int = 200, seed: int = 0):
    """Fit y = 3x + 1 from noisy samples; yield ``%{epoch, loss, w, b}`` each epoch.

    ``server_id`` names a ParameterServer actor created through the proxy: the
    task finds it by its Ray name (see the Elixir example), so state lives in
    the actor, not in the task.
    """
    import ray

    server = ray.get_actor(server_id, namespace="snakepit")
    rng = random.Random(seed)
    data = [
        (x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(samples))
    ]
    for epoch in range(epochs):
        p = ray.get(server.weights.remote())
        errors = [(p["w"] * x + p["b"] - y, x) for x, y in data]
        loss = sum(e * e for e, _ in errors) / len(errors)
        grad_w = 2 * sum(e * x for e, x in errors) / len(errors)
        grad_b = 2 * sum(e for e, _ in errors) / len(errors)
        p = ray.get(server.apply.remote(grad_w, grad_b))
        yield {"epoch": epoch, "loss": round(loss, 5), "w": round(p["w"], 4), "b": round(p["b"], 4)}


def main() -> None:
    import os

    from snakepit_py.testing import FakeSupervisor

    args = ["--ray-address", "local", "--num-cpus", "2", "--tasks", os.path.abspath(__file__)]
    with FakeSupervisor("snakepit_py.ray_proxy", worker_args=args, ready_timeout=60.0,
                        timeout=120.0) as proxy:  # fmt: skip
        actor = proxy.call(
            "create_actor", "ParameterServer", [], {"lr": 0.3}, kwargs={"name": "ps-demo"}
        )
        print("parameter server:", actor)
        job = proxy.call("submit", "train", ["ps-demo"], kwargs={"kwargs": {"epochs": 15}})
        for chunk in proxy.stream("results", job):
            item = chunk["item"]
            print(
                f"  epoch {item['epoch']:2}  loss {item['loss']:.5f}  w={item['w']}  b={item['b']}"
            )
        print("final:", proxy.call("call_actor", actor, "weights"))
        proxy.call("kill_actor", actor)


if __name__ == "__main__":
    main()
