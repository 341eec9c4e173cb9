"""``python -m nbmlp [SUBCOMMAND] ...``.

Without a subcommand: the main job (:mod:`nbmlp.main_job`).  Subcommands are
imported only when named, so the main job starts fast.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> module whose ``main(argv)`` runs it.
SUBCOMMANDS = {
    "train": "nbmlp.cli",
    "predict": "nbmlp.cli",
    "bench": "nbmlp.benchmark",
    "explain": "nbmlp.explain",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        return module.main(argv)
    from .main_job import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
