"""``python -m kvconf``: the ``kvconf`` command."""

from .cli import main

main()
