"""actbench: which activation function, and why - measured on Fashion-MNIST."""

__version__ = "0.1.0"
