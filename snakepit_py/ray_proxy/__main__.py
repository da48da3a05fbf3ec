"""``python -m snakepit_py.ray_proxy [worker options] -- --ray-address ...``: serve the proxy."""

import sys

from snakepit_py.cli import main

sys.exit(main(["worker", "snakepit_py.ray_proxy:RayProxy", *sys.argv[1:]]))
