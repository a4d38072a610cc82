"""actbench.models.vit: the ViT packs bit for bit, is probed over tokens, and refuses bad keys in one line."""

import pytest
import torch
from omegaconf import OmegaConf
from models import batch, pack, train

from actbench import activations
from actbench.conf import CONF_DIR as CONF
from actbench.errors import ConfigError
from actbench.model_facts import PlainModel, fresh
from actbench.models.vit import ViT
from actbench.probes import layer_stats, probe_forward
from actbench.schedule import rate_factor

SMALL = {"patch": 4, "dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0, "dropout": 0.1}


def test_a_packed_vit_member_trains_bit_for_bit_as_alone(threads):
    seeds, names = [3, 4, 5], ["relu", "gelu", "relu"]
    x, y = batch(3)
    packed = pack(ViT, seeds, names, **SMALL)
    losses = train(packed, x, y)
    for k, (seed, name) in enumerate(zip(seeds, names)):
        alone = pack(ViT, [seed], [name], **SMALL)
        assert torch.equal(train(alone, x[k : k + 1], y[k : k + 1]), losses[:, k : k + 1])
        for key, value in alone.state_dict().items():
            assert torch.equal(packed.per_seed(packed.state_dict()[key])[k].reshape(value.shape), value), key


def test_every_blocks_feed_forward_is_probed_over_tokens_and_the_ratio_runs_from_patches_to_head():
    net = pack(ViT, [0, 1], ["relu", "relu"], **SMALL)
    record = probe_forward(net, torch.randn(2, 5, 1, 8, 8))
    assert [tuple(z.shape) for z, _, _ in record] == [(2, 5, 4, 32)] * 2  # 4 patches of 8x8, 32 hidden units
    assert not any(site.channels_first for _, _, site in record)
    assert set(layer_stats(record)) >= {"probes/dead/layer1", "probes/dead/layer2"}
    weights = net.probe_weights()
    assert weights[0] is net.model.embed.weight and weights[-1] is net.model.head.weight


def test_facts_of_the_default_vit():
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.vit.ViT"}, "activation": {"_target_": "torch.nn.GELU"}})
    facts = PlainModel(ViT, cfg)
    dim, hidden, tokens = 64, 128, 16
    block = 2 * dim * 2 + 3 * dim * dim + 3 * dim + dim * dim + dim + dim * hidden + hidden + hidden * dim + dim
    assert facts.n_params(cfg.model, (1, 28, 28), 10) == 49 * dim + dim + tokens * dim + 4 * block + 2 * dim + dim * 10 + 10


def test_a_gated_feed_forward_is_matched_to_two_thirds_and_the_report_sees_its_count():
    """Shazeer's match: three matrices for two, so the feed-forward's 128 hidden units become 85."""
    def facts(name, **keys):
        cfg = OmegaConf.create({"model": {"_target_": "actbench.models.vit.ViT", **keys}, "activation": OmegaConf.load(CONF / "activation" / f"{name}.yaml")})
        return PlainModel(ViT, cfg).n_params(cfg.model, (1, 28, 28), 10)

    gelu = facts("gelu")
    for name in ("swiglu", "geglu", "reglu", "glu", "bilinear"):
        assert abs(facts(name) - gelu) <= 0.01 * gelu
    assert facts("swiglu", match_params=False) - gelu == 4 * (64 * 128 + 128)  # a second input matrix per block
    vit = ViT(lambda: fresh(activations.from_name("swiglu")), (1, 28, 28), 10)
    assert [vit.blocks[0].ff[0].out_features, vit.blocks[0].ff[2].in_features] == [170, 85]


def test_gated_and_learnable_vits_pack_bit_for_bit_with_a_schedule_and_clipping(threads):
    rate = rate_factor(OmegaConf.create({"warmup": 2, "decay": "cosine", "min_lr": 0.1}), 6)
    for names in (["swiglu", "geglu", "swiglu"], ["prelu"] * 2):
        x, y = batch(len(names))
        packed = pack(ViT, list(range(len(names))), names, **SMALL)
        losses = train(packed, x, y, rate=rate, clip_norm=0.5)
        for k, name in enumerate(names):
            alone = train(pack(ViT, [k], [name], **SMALL), x[k : k + 1], y[k : k + 1], rate=rate, clip_norm=0.5)
            assert torch.equal(alone, losses[:, k : k + 1]), name


@pytest.mark.parametrize("key, value, said", [("patch", 5, "must divide the image's 28x28"), ("heads", 3, "must divide dim=64"),
                                              ("depth", 0, "must be an integer >= 1")])
def test_a_key_it_refuses_is_one_line_naming_it(key, value, said):
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.vit.ViT", key: value}, "activation": {"_target_": "torch.nn.GELU"}})
    with pytest.raises(ConfigError, match=rf"^model\.{key}={value}: {said}"):
        PlainModel(ViT, cfg).check((1, 28, 28), 10)


@pytest.mark.slow
def test_a_vit_sweep_runs_packed_with_probes(tiny_run, tmp_path):
    from conftest import metrics, run_cli

    r = run_cli("-m", *tiny_run, "model=vit", "model.depth=2", "activation=relu,swiglu", "seed=0,1", "report.metric=test_acc")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("(+1 packed)") == 2  # a gated pack and a pointwise one
    relu, swiglu = (metrics(tmp_path / "runs" / "tiny" / f"activation={a},model=vit,model.depth=2,seed=1") for a in ("relu", "swiglu"))
    for m in (relu, swiglu):
        assert m["status"] == "finished" and m["hparams"]["model"] == "vit" and m["hparams"]["patch"] == 7
        assert {"probes/dead/layer1", "probes/dead/layer2", "probes/saturated/layer2", "probes/grad_ratio"} <= set(m["probes"])
    assert abs(swiglu["hparams"]["params"] - relu["hparams"]["params"]) <= 0.01 * relu["hparams"]["params"]
    report = (tmp_path / "runs" / "tiny" / "report.md").read_text()
    assert "| params | MFLOPs/example |" in report and f"{relu['hparams']['params']:,}" in report
