"""scripts/bench.py: the reference loop and actbench do the same work, step for step."""

import sys

import pytest
import torch

from conftest import ROOT, synthetic_arrays, write_idx_files, write_sweep

sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402


@pytest.mark.slow
def test_reference_and_actbench_compute_the_same_first_losses(tmp_path):
    arrays = synthetic_arrays(600, 200)
    write_idx_files(tmp_path / "data", arrays)
    ref_times, ref_losses = bench.reference_run(arrays, 0, 1, torch.device("cpu"), val_size=100)
    overrides = [
        f"data.root={tmp_path / 'data'}", "data.system_dirs=[]", f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=100",
        "trainer.max_epochs=1", "trainer.accelerator=cpu", "probes=none", "report=none", "threads=1", "seed=0",
    ]
    clock = bench.actbench_run(overrides, tmp_path / "runs")
    assert len(ref_losses) == len(clock.first_losses) == -(-500 // 32)  # the short last batch too
    assert torch.allclose(ref_losses, clock.first_losses, rtol=1e-5, atol=1e-6)
    assert len(ref_times) == 1 and len(clock.times) == 1


@pytest.mark.slow
def test_the_language_models_reference_computes_actbenchs_first_losses(tmp_path):
    from actbench.data.text import ShakespeareChar

    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "input.txt").write_text("".join(f"line {i}: to be or not to be\n" for i in range(600)))
    keys = {"windows_per_epoch": 96, "block_size": 64}
    data = ShakespeareChar([0], root=str(tmp_path / "text"), cache_dir=None, **keys)
    data.prepare()
    _, ref_losses = bench.reference_lm_run(data, 0, 1, torch.device("cpu"))
    overrides = ["data=shakespeare_char", "model=gpt", f"data.root={tmp_path / 'text'}", f"data.cache_dir={tmp_path / 'cache'}",
                 *(f"data.{k}={v}" for k, v in keys.items()), "data.sample_chars=0", "trainer.max_epochs=1",
                 "trainer.accelerator=cpu", "probes=none", "report=none", "threads=1", "seed=0"]
    clock = bench.actbench_run(overrides, tmp_path / "runs")
    assert len(ref_losses) == len(clock.first_losses) == 3
    assert torch.allclose(ref_losses, clock.first_losses, rtol=1e-5, atol=1e-6)


def test_reference_model_starts_from_actbench_weights():
    from omegaconf import OmegaConf
    from torch import nn

    from actbench.conf import option
    from actbench.model import model_class
    from actbench.model_facts import activation_factory

    ref = bench.reference_model(3, torch.device("cpu"))
    cfg = OmegaConf.create({"model": option("model", "mlp"), "activation": {"_target_": "torch.nn.ReLU"},
                            "data": {"_target_": "actbench.data.FashionMNIST"}})
    ours = model_class(cfg).pack(cfg.model, [3], [activation_factory(cfg.activation)], (1, 28, 28), 10)
    assert sum(isinstance(m, nn.Linear) for m in ref.modules()) == 2
    assert ref.state_dict().keys() == ours.model.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert torch.equal(value, ours.model.state_dict()[key])


def test_same_science_compares_each_member_with_its_twin(tmp_path, capsys):
    accs = {"relu": [0.861, 0.872], "gelu": [0.869, 0.866]}
    write_sweep(tmp_path / "packed", accs)
    write_sweep(tmp_path / "apart", accs)  # the same bits
    write_sweep(tmp_path / "off", {**accs, "gelu": [0.869, 0.8663]})  # one run 3e-4 away: packing is bit for bit, or it is wrong
    bench.same_science(tmp_path / "packed", tmp_path / "apart")
    assert "4 runs" in (out := capsys.readouterr().out) and "0.0e+00" in out and "-> agree" in out
    bench.same_science(tmp_path / "packed", tmp_path / "off")
    assert "3.0e-04" in (out := capsys.readouterr().out) and "-> DIFFER" in out
    # a twin that diverged (NaN) or is missing is no agreement
    write_sweep(tmp_path / "nan", {**accs, "gelu": [0.869, float("nan")]})
    bench.same_science(tmp_path / "packed", tmp_path / "nan")
    assert "-> DIFFER" in capsys.readouterr().out
    write_sweep(tmp_path / "short", {"relu": accs["relu"], "gelu": accs["gelu"][:1]})
    bench.same_science(tmp_path / "packed", tmp_path / "short")
    assert "without a twin: activation=gelu,seed=1 -> DIFFER" in capsys.readouterr().out
