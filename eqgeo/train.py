"""``python -m eqgeo.train``: the same command as ``eqgeo-train`` (see :mod:`eqgeo.training.train`)."""

import sys

from .cli import train as main

if __name__ == "__main__":
    sys.exit(main())
