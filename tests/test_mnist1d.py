"""actbench.data.mnist1d and the models for its signals: made by the package's own generator,
the same every time, cached; the 1-D ConvNet and the residual MLP; models that cannot take a
signal refused in one line; a sweep on it."""

import re

import numpy as np
import pytest
import torch
from conftest import compose_cfg, metrics, run_cli

from actbench.data import MNIST1D
from actbench.errors import ConfigError, DataError
from actbench.model import model_class
from actbench.model_facts import fresh
from actbench.models.cnn1d import ConvNet1D
from actbench.models.mlp import MLP

SMALL = {"num_samples": 300, "val_size": 40}


def made(tmp_path, seeds=(0,), **keys) -> MNIST1D:
    data = MNIST1D(list(seeds), cache_dir=str(tmp_path / "cache"), **{**SMALL, **keys})
    data.prepare()
    return data


def test_its_facts_and_shapes(tmp_path):
    cfg = compose_cfg("data=mnist1d").data
    assert MNIST1D.INPUT_SHAPE == (1, 40) and MNIST1D.N_CLASSES == 10
    assert MNIST1D.sizes(cfg) == {"train": 4000, "test": 1000} and cfg.val_size == 500
    data = made(tmp_path, seeds=(0, 1))
    assert data.train_x.shape == (240, 1, 40) and data.test_x.shape == (60, 1, 40) and data.train_x.dtype == torch.float32
    assert data.train_idx.shape == (2, 200) and sorted(set(data.train_y.tolist())) == list(range(10))


def test_made_twice_it_is_the_packages_own_dataset_and_cached(tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 300
    ref = make_dataset(args)
    first = made(tmp_path)
    assert len(list((tmp_path / "cache").glob("mnist1d-*.npz"))) == 1
    again = made(tmp_path)  # from the cache
    fresh_made = MNIST1D([0], cache_dir=None, **SMALL)
    fresh_made.prepare()
    for d in (first, again, fresh_made):
        assert np.array_equal(d.train_x[:, 0].numpy(), ref["x"].astype(np.float32)) and np.array_equal(d.test_y.numpy(), ref["y_test"])
    other = made(tmp_path, generate={"seed": 7})
    assert not torch.equal(other.train_x, first.train_x)


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(DataError, match=r"data.generate: nonsense not among the mnist1d package's arguments"):
        made(tmp_path, generate={"nonsense": 1})
    with pytest.raises(DataError, match=r"data.num_samples=5 must be an integer >= 20"):
        MNIST1D([0], num_samples=5)


def test_the_1d_convnet_is_the_papers():
    net = ConvNet1D(torch.nn.ReLU, (1, 40), 10)
    assert net.layers[-1].in_features == 125  # 25 channels x 5 positions
    assert sum(p.numel() for p in net.parameters()) == (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + 125 * 10 + 10
    assert net(torch.randn(3, 1, 40)).shape == (3, 10)


def test_the_residual_mlp_adds_each_later_layers_input():
    net = MLP(lambda: fresh(torch.nn.ReLU()), (1, 40), 10, depth=2, width=256, residual=True)
    assert sum(p.numel() for p in net.parameters()) == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    x = torch.randn(5, 1, 40)
    lin1, lin2, out = net.layers[1], net.layers[3], net.layers[5]
    h1 = torch.relu(lin1(x.flatten(1)))
    assert torch.allclose(net(x), out(torch.relu(lin2(h1)) + h1), atol=1e-6)


@pytest.mark.parametrize("model, said", [("cnn", "the ConvNet takes images [channels, height, width]; this data's examples are (1, 40)"),
                                         ("vit", "the ViT takes images")])
def test_a_model_that_cannot_take_a_signal_is_one_line(model, said):
    cfg = compose_cfg("data=mnist1d", f"model={model}")
    with pytest.raises(ConfigError, match=rf"^model \(actbench.models.\w+.\w+\): {re.escape(said)}"):
        model_class(cfg).check((1, 40), 10)


def test_a_signal_model_refuses_images_in_one_line():
    cfg = compose_cfg("model=cnn1d")
    with pytest.raises(ConfigError, match=r"a 1-D ConvNet takes signals \[channels, length\]; this data's examples are \(1, 28, 28\)"):
        model_class(cfg).check((1, 28, 28), 10)


@pytest.mark.slow
def test_a_sweep_on_mnist1d_writes_the_usual_runs(tmp_path):
    r = run_cli("-m", "data=mnist1d", f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}", "name=m",
                "data.num_samples=300", "data.val_size=40", "trainer.max_epochs=2", "model=cnn1d,mlp_mnist1d",
                "activation=relu,gelu", "seed=0", "report.metric=test_acc")
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics(next((tmp_path / "runs" / "m").glob("activation=gelu,*,model=cnn1d,*")))
    assert m["status"] == "finished" and m["hparams"]["data"] == "mnist1d" and m["hparams"]["params"] == 5210
    assert {"probes/dead/layer3", "probes/grad_ratio"} <= set(m["probes"])
    assert (tmp_path / "runs" / "m" / "report.md").exists()
