"""actbench: which activation function, and why - measured on Fashion-MNIST."""

import os

# MKL's strict reproducibility: its matrix products give the same bits on any number of threads
# (without it, a dense layer's weight gradient sums in another order on two threads than on one).
# Read at MKL's first product, so setting it here, before any, is enough.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
