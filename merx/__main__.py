"""``python -m merx``: the same as the ``merx`` command."""

from merx.cli import main

main()
