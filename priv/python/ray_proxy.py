"""The bundled Ray proxy as a script for an Elixir app's ``priv/python``.

    python priv/python/ray_proxy.py -- --ray-address local --tasks priv/python/my_tasks.py

Runtime options (``--threads``, ``--fd``...) come first, the proxy's after ``--``
(see docs/ray.md).
"""

import snakepit_py as snakepit
from snakepit_py.ray_proxy import RayProxy as _RayProxy


class RayProxy(_RayProxy):
    """Submit Ray tasks, actors and jobs from the BEAM."""


if __name__ == "__main__":
    snakepit.run()
