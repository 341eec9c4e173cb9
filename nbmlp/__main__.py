"""``python -m nbmlp [COMMAND] ...``: see :mod:`nbmlp.cli` (without a command: the note's network on Iris)."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
