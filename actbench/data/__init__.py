"""The datasets, each in memory on the training device: the contract they keep and the batching
they share (`memory`), and one module per dataset, named by `conf/data/*.yaml`. A new dataset is
one module here (a subclass of `InMemoryData`) and one YAML file."""

from __future__ import annotations

import sys

from actbench.data.cifar10 import CIFAR10
from actbench.data.idx import MNIST, FashionMNIST, load_arrays, to_float
from actbench.data.memory import Chunk, EvalBatches, InMemoryData, TrainBatches, derive_seed, generator, split_indices
from actbench.data.mnist1d import MNIST1D

__all__ = ["FashionMNIST", "MNIST", "CIFAR10", "MNIST1D", "InMemoryData", "Chunk", "EvalBatches", "TrainBatches", "derive_seed", "generator",
           "split_indices", "load_arrays", "to_float", "main"]


def main(argv=None) -> int:
    """`python -m actbench.data [OVERRIDE ...]`: find, verify and cache (or make) the data that a
    run with the same overrides (data=mnist1d, data.root=..., data.download=true) would use."""
    import argparse

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    from actbench.conf import CONF_DIR
    from actbench.errors import DataError

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("overrides", nargs="*", help="config overrides, as for actbench.train (e.g. data.root=/data/fmnist)")
    args = ap.parse_args(argv)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = compose("train", overrides=args.overrides, return_hydra_config=True)
        hydra_cfg, before = HydraConfig.instance(), HydraConfig.instance().cfg
        hydra_cfg.set_config(cfg)  # data.root is relative to the working directory, as in a run
        try:
            data = instantiate(cfg.data, seeds=[0])
        finally:
            hydra_cfg.cfg = before
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        print(f"actbench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        arrays = data.load()
    except DataError as e:
        print(f"actbench: error: {e}", file=sys.stderr)
        return 2
    print(data.describe(arrays))
    return 0
