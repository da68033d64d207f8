"""``python -m workers`` is ``rapid``."""

from workers.cli import main

main()
