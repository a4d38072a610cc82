"""The datasets, each in memory on the training device: the contract they keep and the batching
they share (`memory`), and one module per dataset, named by `conf/data/*.yaml`. A new dataset is
one module here (a subclass of `InMemoryData`) and one YAML file."""

from __future__ import annotations

import sys

from actbench.data.cifar10 import CIFAR10
from actbench.data.idx import MNIST, FashionMNIST, load_arrays, to_float
from actbench.data.memory import Chunk, EvalBatches, InMemoryData, TrainBatches, derive_seed, generator, split_indices
from actbench.data.mnist1d import MNIST1D
from actbench.data.text import ShakespeareChar

__all__ = ["FashionMNIST", "MNIST", "CIFAR10", "MNIST1D", "ShakespeareChar", "InMemoryData", "Chunk", "EvalBatches", "TrainBatches", "derive_seed", "generator",
           "split_indices", "load_arrays", "to_float", "main"]


def main(argv=None) -> int:
    """`python -m actbench.data [OVERRIDE ...]`: find, verify and cache (or make, or fetch) the data
    that a run with the same overrides (data=mnist1d, data.root=..., data.download=true) would use."""
    import argparse

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    from actbench.conf import CONF_DIR, resolving_as_job
    from actbench.errors import DataError

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("overrides", nargs="*", help="config overrides, as for actbench.train (e.g. data.root=/data/fmnist)")
    args = ap.parse_args(argv)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = compose("train", overrides=args.overrides, return_hydra_config=True)
        with resolving_as_job(cfg):  # data.root is relative to the working directory, as in a run
            data = instantiate(cfg.data, seeds=[0])
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        print(f"actbench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        data.fetch()
        arrays = data.load()
    except DataError as e:
        print(f"actbench: error: {e}", file=sys.stderr)
        return 2
    print(data.describe(arrays))
    return 0
