"""``python -m snakepit_py`` is the ``snakepit-py`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
