"""actbench.checks: every knob users type is checked before anything is built."""

import sys
from pathlib import Path

import pytest
from conftest import compose_cfg as cfg

from actbench.checks import check_choices, validate
from actbench.conf import CONF_DIR, locate
from actbench.errors import ConfigError

# every file of these groups, as shipped (a new one is checked too)
SHIPPED = {group: sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))
           for group in ("experiment", "optimizer", "trainer", "probes", "report")}


@pytest.mark.parametrize("override", [None] + [f"{g}={c}" for g, choices in SHIPPED.items() for c in choices])
def test_shipped_configs_pass(override):
    validate(cfg(*([override] if override else [])))


def test_a_switched_off_probe_is_not_checked():
    validate(cfg("probes.gradients=null"))
    with pytest.raises(ConfigError, match="probes.gradients.every_n_steps=0"):
        validate(cfg("probes.gradients.every_n_steps=0"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.width=-3", "model.width=-3: must be an integer >= 1"),
        ("model.depth=0", "model.depth=0: must be an integer >= 1"),
        ("model.width=1.5", "model.width=1.5: must be an integer >= 1"),
        ("model.init=xavier", "model.init='xavier': must be one of torch, glorot, kaiming, lecun"),
        ("model.dropout=1", "model.dropout=1: must be a number in [0, 1)"),
        ("model=cnn model.norm=layer", "model.norm='layer': must be one of none, batch"),
        ("model=cnn model.channels=[16,0]", "model.channels=[16, 0]: must be a non-empty list of integers >= 1, e.g. [16,32]"),
        ("model._target_=torch.nn.Linear", "model._target_='torch.nn.Linear': a model is constructed as Model(activation, "
                                          "input_shape, n_classes, **its keys); Linear takes (in_features, out_features, bias, device, dtype)"),
        ("model._target_=math.sqrt", "model._target_='math.sqrt': must name a torch.nn.Module class"),
        ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
        ("optimizer.lr=fast", "optimizer.lr='fast': must be a number > 0"),
        ("optimizer.lr=1e999", "optimizer.lr=inf: must be a number > 0"),
        ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("data.val_size=-1", "data.val_size=-1: must be an integer >= 1"),
        ("data.download=maybe", "data.download='maybe': must be true or false"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be an integer >= 1"),
        ("trainer.max_epochs=true", "trainer.max_epochs=True: must be an integer >= 1"),
        ("seed=-1", "seed=-1: must be an integer >= 0"),
        ("max_pack=0", "max_pack=0: must be null or an integer >= 1"),
        ("cuda_graph=maybe", "cuda_graph='maybe': must be auto, true or false"),
        ("threads=0", "threads=0: must be auto or an integer >= 1"),
        ("probes.activations.dead_tol=null", "probes.activations.dead_tol=None: must be a number >= 0"),
        ("report.effect=0", "report.effect=0: must be null or a number > 0"),
        ("ownership.mode=nfs", "ownership.mode='nfs': must be auto, lock or lease"),
        ("ownership.renew_s=30", "ownership.renew_s=30: must be left out: it was removed (a lease is refreshed every lease_s / 5)"),
        ("report.alpha=5", "report.alpha=5: must be a number in (0, 1)"),
        ("report.power=1", "report.power=1: must be a number in (0, 1)"),
        ("report.power=0.04", "report.power=0.04: must be more than report.alpha=0.05"),
        ("report.metric=test_accuracy", "report.metric='test_accuracy': must be auto or one of train_loss, train_acc, val_loss, "
                                        "val_acc, test_loss, test_acc, epoch_s_median, fit_s, startup_s, wall_s"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        validate(cfg(*override.split()))
    assert str(e.value) == message


@pytest.mark.parametrize("seeds, problem", [("[]", "non-empty list"), ("[1,1]", "each seed may appear once"), ("[0,-2]", "integers >= 0"), ("3", "list")])
def test_bad_seed_lists(seeds, problem):
    with pytest.raises(ConfigError, match=problem):
        validate(cfg(f"seeds={seeds}"))


def test_seed_zero_and_packs_are_fine():
    validate(cfg("seed=0"))
    validate(cfg("seeds=[0,1,2]", "max_pack=2"))


def test_a_model_states_the_rules_of_its_own_keys(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # tests/models.py, as a user's module
    monkeypatch.delitem(sys.modules, "models", raising=False)  # and forgotten again after the test
    validate(cfg("model._target_=models.Blocks", "+model.blocks=2"))
    with pytest.raises(ConfigError) as e:
        validate(cfg("model._target_=models.Blocks", "+model.blocks=0"))
    assert str(e.value) == "model.blocks=0: must be an integer >= 1"


@pytest.mark.parametrize("target, why", [("no_such_module.Net", "No module named 'no_such_module'"),
                                         ("actbench.model.NoSuchNet", "Are you sure that 'NoSuchNet' is importable")])
def test_a_target_that_cannot_be_found_is_one_line(target, why, caplog):
    with pytest.raises(ConfigError) as e:
        validate(cfg(f"model._target_={target}"))
    assert str(e.value).startswith(f"model._target_={target!r}: ") and why in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="activation._target_"):
        locate(target, "activation._target_")
    assert not caplog.records  # hydra's own multi-line log of the failure is kept quiet


def test_choices_typed_are_checked_against_conf_and_the_folders_a_command_adds(tmp_path):
    check_choices(["-m", "activation=relu,gelu", "model=cnn", "hydra/launcher=submitit_slurm", "optimizer.lr=1e-3,3e-3"])
    with pytest.raises(ConfigError) as e:
        check_choices(["-m", "activation=relu,relux"])
    assert str(e.value).startswith("activation='relux': no such activation; valid: bilinear, elu, geglu, gelu, ")
    (tmp_path / "activation").mkdir()
    (tmp_path / "activation" / "mine.yaml").write_text("_target_: torch.nn.Hardswish\n")
    check_choices(["--config-dir", str(tmp_path), "activation=mine"])
    check_choices([f"hydra.searchpath=[file://{tmp_path}]", "activation=mine,relu"])
    check_choices(["hydra.searchpath=[pkg://my_package.conf]", "activation=theirs"])  # left to Hydra
    with pytest.raises(ConfigError, match="'mine'"):
        check_choices(["activation=mine"])
    check_choices(["-m", "activation=choice(relu,gelu)", "+experiment=blog"])  # Hydra's grammar, a group added
    (tmp_path / "activation" / "family").mkdir()
    (tmp_path / "activation" / "family" / "deep.yaml").write_text("_target_: torch.nn.ReLU\n")
    check_choices(["-cd", str(tmp_path), "activation=family/deep"])  # an option in a group's subfolder
    check_choices(["--config-name", "mine", "activation=anything"])  # another primary config: Hydra's to check
