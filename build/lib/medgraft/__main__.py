"""Allows ``python -m medgraft``, identical to the ``medgraft`` console script."""

from medgraft.cli import main

main()
