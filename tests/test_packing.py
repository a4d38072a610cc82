"""actbench.packing: which jobs of a sweep become one packed job, and which runs of a job share a pack."""

from types import SimpleNamespace

import pytest

from actbench.packing import members_override, pack_jobs, parse_value, split_packs
from conftest import compose_cfg


def jobs(*lists):
    return [list(j) for j in lists]


def members_of(job):
    (m,) = [o for o in job if o.startswith("members=")]
    return parse_value(m)


def test_runs_that_differ_in_seed_and_activation_become_one_job():
    grid = [[f"activation={a}", f"seed={s}", "trainer.max_epochs=2"] for a in ("relu", "gelu") for s in (0, 1)]
    (job,) = pack_jobs(grid)
    assert job[0] == "trainer.max_epochs=2"
    assert members_of(job) == [["activation=relu", "seed=0"], ["activation=relu", "seed=1"],
                               ["activation=gelu", "seed=0"], ["activation=gelu", "seed=1"]]


def test_other_keys_make_separate_packs():
    grid = [[f"optimizer.lr={lr}", f"activation={a}"] for lr in (0.1, 0.01) for a in ("relu", "leaky")]
    packs = pack_jobs(grid)
    assert [p[0] for p in packs] == ["optimizer.lr=0.1", "optimizer.lr=0.01"]
    assert all(members_of(p) == [["activation=relu"], ["activation=leaky"]] for p in packs)


def test_activation_keys_are_member_keys():
    grid = jobs(["activation=leaky", "activation.negative_slope=0.2"], ["activation=leaky", "activation.negative_slope=0.3"],
                ["+activation._target_=torch.nn.Softsign"])
    (job,) = pack_jobs(grid)
    assert len(members_of(job)) == 3


def test_a_group_of_one_stays_a_plain_job_and_max_pack_splits():
    assert pack_jobs(jobs(["activation=relu", "seed=0"])) == [["activation=relu", "seed=0"]]
    grid = [[f"seed={s}"] for s in range(5)]
    packs = pack_jobs(grid, max_pack=2)
    assert [len(members_of(p)) for p in packs[:2]] == [2, 2] and packs[2] == ["seed=4"]


def test_seeds_replace_a_swept_seed_and_the_same_run_is_asked_once():
    # a preset sweeping seed: 0,1,2 beside seeds=[...] on the command line
    grid = [["activation=relu", f"seed={s}", "seeds=[3,4]"] for s in (0, 1, 2)]
    (job,) = pack_jobs(grid)
    assert members_of(job) == [["activation=relu", "seed=3"], ["activation=relu", "seed=4"]]
    assert pack_jobs(grid, pack=False) == [["activation=relu", "seeds=[3,4]"]]  # the job's own packed seeds


def test_pack_false_is_one_job_per_run():
    grid = [[f"activation={a}", f"seed={s}"] for a in ("relu", "gelu") for s in (0, 1)]
    assert pack_jobs(grid, pack=False) == grid


def test_members_travel_through_hydras_grammar():
    members = [["activation=relu", "seed=0"], ["+activation._target_=my.mod.f", "activation.p='x,y'"]]
    assert parse_value(members_override(members)) == members


def run(activation="relu", seed=0, *overrides):
    cfg = compose_cfg(f"activation={activation}", f"seed={seed}", "data.root=data", *overrides)  # no Hydra run to resolve the cwd
    return SimpleNamespace(cfg=cfg, name=f"{activation},{seed}")


def test_a_job_splits_members_that_disagree_beyond_seed_and_activation():
    runs = [run("relu", 0), run("gelu", 0), run("relu", 0, "model.width=64"), run("gelu", 1)]
    packs, why = split_packs(runs, limit=None)
    assert why is None
    assert [[r.name for r in p] for p in packs] == [["relu,0", "gelu,0", "gelu,1"], ["relu,0"]]


def test_members_of_one_activation_sit_side_by_side_and_the_limit_holds():
    runs = [run("relu", 0), run("gelu", 0), run("relu", 1), run("gelu", 1), run("relu", 2)]
    packs, _ = split_packs(runs, limit=None)
    assert [r.name for r in packs[0]] == ["relu,0", "relu,1", "relu,2", "gelu,0", "gelu,1"]
    packs, _ = split_packs(runs, limit=2)
    assert [len(p) for p in packs] == [2, 2, 1]


def test_an_optimizer_that_mixes_a_matrix_trains_its_runs_apart_with_a_reason():
    mixing = ("optimizer._target_=torch.optim.Adafactor", "~optimizer.betas", "~optimizer.fused")
    packs, why = split_packs([run("relu", 0, *mixing), run("gelu", 0, *mixing)], limit=None)
    assert [len(p) for p in packs] == [1, 1]
    assert "Adafactor" in why and "one after another" in why


@pytest.mark.parametrize("sweep, expected", [("seed=0,1", 1), ("optimizer.lr=0.1,0.01", 2), ("model.depth=1,2", 2)])
def test_the_sweeper_plugin_launches_one_job_per_pack(sweep, expected):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.actbench_sweeper.packing_sweeper import PackingSweeper

    sweeper = PackingSweeper(max_batch_size=None)
    sweeper.config = compose_cfg()
    overrides = OverridesParser.create().parse_overrides(["activation=relu,gelu", sweep])
    (batch,) = sweeper.split_arguments(overrides, None)
    assert len(batch) == expected
    sweeper.config = compose_cfg("pack=false")
    (batch,) = sweeper.split_arguments(overrides, None)
    assert len(batch) == 4


def test_gated_activations_pack_together_apart_from_pointwise_ones():
    """A gated unit's layers have other shapes than a pointwise one's: two packs of one job."""
    runs = [run(a, 0) for a in ("relu", "swiglu", "gelu", "geglu")]
    packs, why = split_packs(runs, limit=None)
    assert why is None
    assert [[r.name for r in p] for p in packs] == [["relu,0", "gelu,0"], ["swiglu,0", "geglu,0"]]


def test_a_convnet_packs_its_activations_together():
    runs = [run(a, s, "model=cnn") for a in ("relu", "gelu") for s in (0, 1)]
    packs, _ = split_packs(runs, limit=None)
    assert [[r.name for r in p] for p in packs] == [["relu,0", "relu,1", "gelu,0", "gelu,1"]]


@pytest.mark.parametrize("sweep, message", [
    ("optimizer.lr=1e-3,abc", "actbench: error: optimizer.lr='abc': must be a number > 0"),  # the second pack
    ("seed=0,-3", "actbench: error: seed=-3: must be an integer >= 0"),  # a pack's second member
    ("activation=relu,nope", "actbench: error: activation='nope': no such activation; valid: bilinear, elu,"),
])
def test_a_bad_value_anywhere_in_a_sweep_stops_it_before_any_job_trains(tiny_run, tmp_path, sweep, message):
    from conftest import run_cli

    r = run_cli("-m", *tiny_run, *sweep.split())
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(message)
    assert not list((tmp_path / "runs").rglob("metrics.json"))  # nothing trained, the valid pack included


def test_a_users_activation_on_the_search_path_passes_the_check(tiny_run, tmp_path):
    from conftest import metrics, run_cli

    mine = tmp_path / "myconf" / "activation"
    mine.mkdir(parents=True)
    (mine / "my_hswish.yaml").write_text("_target_: torch.nn.Hardswish\n")
    r = run_cli("-m", *tiny_run, "activation=relu,my_hswish", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]  # a pack's second member, checked with the command's search path
    assert metrics(tmp_path / "runs" / "tiny" / "activation=my_hswish")["status"] == "finished"
