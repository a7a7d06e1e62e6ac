"""``python -m sdk.cli``: the same as the ``adapters`` command."""

from . import main

main()
