"""``python -m eqgeo.train``: the same command as ``eqgeo-train`` (see :mod:`eqgeo.training.train`)."""

import sys

from .training.train import main

if __name__ == "__main__":
    sys.exit(main())
