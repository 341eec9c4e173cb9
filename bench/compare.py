"""Time nbmlp against NumPy, PyTorch and JAX: ``python bench/compare.py [options]``.

The same as ``python -m nbmlp bench``; the implementation is nbmlp/benchmark.py.
Writes bench/out/latest.{json,md,png} (git-ignored; ``--out DIR`` elsewhere).  ``--help`` lists the options
and the sections (nbmlp.benchmark.SECTIONS).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from nbmlp.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
