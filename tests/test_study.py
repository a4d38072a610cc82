"""actbench.study and the study sweeper: settings, the grid's boundary rule, scores from runs on
disk, the selection, resuming, launchers, and the study's report."""

import json
from pathlib import Path

import pytest

from actbench import study
from actbench.errors import ConfigError
from conftest import events, metrics, run_cli, write_run

TESTS = str(Path(__file__).resolve().parent)
SETTINGS = {"lrs": [1e-3, 1e-2], "tune_seeds": [100, 101], "seeds": [0, 1], "select": "val_loss", "max_extend": 2}


def settings(**changes):
    return study.settings({**SETTINGS, **changes})


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("change, message", [
    ({"lrs": []}, "study.lrs=[]"), ({"lrs": [1e-3, 0]}, "study.lrs"), ({"lrs": [-1e-3]}, "study.lrs"),
    ({"seeds": [0, 100]}, "study.tune_seeds and study.seeds share [100]"), ({"select": "acc"}, "study.select='acc'"),
    ({"max_extend": -1}, "study.max_extend"), ({"tune_seeds": [1, 1]}, "each seed may appear once"),
    ({"nuisance": {"optimizer.eps": {"low": 1, "high": 0}}, "trials": 3}, "study.nuisance.optimizer.eps"),
    ({"nuisance": {"optimizer.eps": {"low": 1e-9, "high": 1e-6, "log": True}}}, "study.trials"),
])
def test_bad_settings_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings(**change)


def test_default_preset_settings():
    from conftest import compose_cfg

    s = study.settings(compose_cfg("experiment=fair").study)
    assert s.lrs == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2) and s.tune_seeds == (100, 101, 102) and s.seeds == tuple(range(10))
    assert not set(s.tune_seeds) & set(s.seeds) and s.select == "val_loss" and s.max_extend == 2


# ---------------------------------------------------------------- arms, the boundary rule, scores


def test_arms_are_activations_per_cell_and_only_swept_keys_label_them():
    jobs = [["name=f", f"model.depth={d}", f"activation={a}", "seed=3"] for d in (1, 8) for a in ("relu", "gelu")]
    arms = study.arms(jobs)
    assert [a.label for a in arms] == ["relu [model.depth=1]", "gelu [model.depth=1]", "relu [model.depth=8]", "gelu [model.depth=8]"]
    assert all("seed=3" not in a.cell for a in arms)  # the study chooses the seeds


def test_the_boundary_rule_steps_past_an_edge_and_stops_at_max_extend():
    s = settings(lrs=[1e-3, 1e-2, 1e-1], max_extend=2)
    tried = [1e-3, 1e-2, 1e-1]
    assert study.extend(tried, 1e-2, s) is None  # inside: nothing to add
    assert study.extend(tried, 1e-1, s) == pytest.approx(1.0)  # the grid's step is 10
    assert study.extend(tried, 1e-3, s) == pytest.approx(1e-4)
    assert study.extend([*tried, 1.0, 10.0], 10.0, s) is None  # two steps past the upper edge: no more
    assert "still on the upper edge" in study.edge_note([*tried, 1.0, 10.0], 10.0, s)
    assert study.extend([*tried, 1.0, 10.0], 1e-3, s) == pytest.approx(1e-4)  # the lower edge has its own budget
    assert study.extend(tried, 1e-1, settings(lrs=[1e-3, 1e-2, 1e-1], max_extend=0)) is None


def write_tune_run(stage: Path, point, seed: int, exclude, status="finished", **final):
    job = next(j for j in point.jobs([seed], stage))
    d = study.run_dir(job, exclude)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"status": status, "final": final}))


def test_a_score_is_the_mean_over_tune_seeds_and_a_failed_run_makes_it_the_worst(tmp_path):
    s, exclude = settings(), ["name"]
    arm = study.Arm(("name=f",), ("activation=relu",))
    good, bad, half = (study.lr_point(arm, lr) for lr in (1e-3, 1e-2, 1e-1))
    for seed, v in ((100, 0.5), (101, 0.7)):
        write_tune_run(tmp_path, good, seed, exclude, val_loss=v)
    write_tune_run(tmp_path, bad, 100, exclude, val_loss=0.1)
    write_tune_run(tmp_path, bad, 101, exclude, status="diverged")
    write_tune_run(tmp_path, half, 100, exclude, val_loss=0.2)
    scores = {p: study.score(p, s, tmp_path, exclude) for p in (good, bad, half)}
    assert scores[good].value == pytest.approx(0.6) and scores[good].per_seed == [0.5, 0.7]
    assert scores[bad].value == float("inf") and scores[bad].bad  # diverged: the worst, whatever the other seed did
    assert scores[half].value is None  # a tune seed still missing
    assert study.best([good, bad], scores, s) is good
    acc = settings(select="val_acc")
    assert study.score(good, acc, tmp_path, exclude).bad  # no val_acc recorded: not a usable score


# ---------------------------------------------------------------- the whole study through the CLI


@pytest.fixture
def tiny_study(tiny_run):
    """CLI arguments for a small study on the tiny data: relu and sigmoid, two rates, two tune seeds, two confirm seeds."""
    args = [a for a in tiny_run if a != "experiment=tiny"]
    return ["-m", *args, "experiment=fair", "data.val_size=100", "data.probe_size=64", "data.system_dirs=[]",
            "trainer.max_epochs=1", "trainer.log_every_n_steps=5", "activation=relu,sigmoid", "study.lrs=[1e-3,1e-2]",
            "study.tune_seeds=[100,101]", "study.seeds=[0,1]"]


def tune_means(sweep: Path, arm: str) -> dict[float, float]:
    """Each rate's mean tune val_loss, from the tune runs' own metrics.json."""
    means: dict = {}
    for d in (sweep / "tune").glob(f"activation={arm},*"):
        m = metrics(d)
        means.setdefault(m["config"]["optimizer"]["lr"], []).append(m["final"]["val_loss"])
    return {lr: sum(v) / len(v) for lr, v in means.items()}


@pytest.mark.slow
def test_a_study_selects_each_activations_best_rate_and_confirms_it_on_fresh_seeds(tiny_study, tmp_path):
    r = run_cli(*tiny_study, "name=f", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "f"
    sel = json.loads((sweep / "study.json").read_text())
    for arm in sel["arms"]:
        act = arm["activation"][0].split("=")[1]
        means = tune_means(sweep, act)
        assert len(means) >= 2 and len(list((sweep / "tune").glob(f"activation={act},*"))) == 2 * len(means)  # two tune seeds each
        assert arm["lr"] == min(means, key=means.get)  # the best mean tune score, checked against the runs
        confirm = sorted((sweep / "confirm").glob(f"activation={act},*"))
        assert [metrics(d)["config"]["seed"] for d in confirm] == [0, 1]  # the confirm seeds, never a tune seed
        assert all(metrics(d)["config"]["optimizer"]["lr"] == arm["lr"] for d in confirm)
        assert all("test_acc" in metrics(d)["final"] for d in confirm)
    assert not {metrics(d)["config"]["seed"] for d in (sweep / "tune").iterdir() if (d / "metrics.json").exists()} & {0, 1}
    text = (sweep / "report.md").read_text()
    assert "## The answer" in text and "## Selection" in text and "![isolation plot](isolation.png)" in text
    assert (sweep / "isolation.png").read_bytes().startswith(b"\x89PNG") and (sweep / "confirm" / "report.md").exists()
    assert "(confirm/test_acc.png)" in text  # the confirm stage's figures, linked from the root
    assert events(sweep).Tags()["images"] == ["loss/_report_isolation"]  # and in TensorBoard, at the study's root


@pytest.mark.slow
def test_the_boundary_rule_grows_the_grid_through_the_cli(tiny_study, tmp_path):
    # rates far too small for one epoch: the best is always the largest, so the grid grows upwards, once
    args = [a if not a.startswith("study.lrs=") else "study.lrs=[1e-5,1e-4]" for a in tiny_study]
    r = run_cli(*args, "name=b", "study.max_extend=1", "activation=relu", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (arm,) = json.loads((tmp_path / "runs" / "b" / "study.json").read_text())["arms"]
    assert sorted(p["lr"] for p in arm["points"]) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert arm["lr"] == pytest.approx(1e-3) and "still on the upper edge" in arm["note"]
    assert "still on the upper edge" in (tmp_path / "runs" / "b" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    ["+callbacks.kill._target_=callbacks.KillAt", "+callbacks.kill.step=8"],  # within the tune stage's first pack
    ["+callbacks.kill._target_=callbacks.KillInStage", "+callbacks.kill.stage=confirm"],  # between the stages
], ids=["within-tune", "between-stages"])
def test_a_killed_study_resumes_to_the_same_selection_and_results(tiny_study, tmp_path, kill):
    killed = run_cli(*tiny_study, "name=k", *kill, env={"PYTHONPATH": TESTS}, timeout=600)
    assert killed.returncode != 0
    resumed = run_cli(*tiny_study, "name=k", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = run_cli(*tiny_study, "name=w", timeout=600)
    assert whole.returncode == 0
    k, w = (json.loads((tmp_path / "runs" / n / "study.json").read_text()) for n in "kw")
    assert [a["chosen"] for a in k["arms"]] == [a["chosen"] for a in w["arms"]]
    for d in (tmp_path / "runs" / "w" / "confirm").iterdir():
        if (d / "metrics.json").exists():
            mk = metrics(tmp_path / "runs" / "k" / "confirm" / d.name)
            assert mk["status"] == "finished" and mk["final"]["test_loss"] == pytest.approx(metrics(d)["final"]["test_loss"], rel=1e-6)


@pytest.mark.slow
def test_the_local_launcher_runs_both_stages(tiny_study, tmp_path):
    r = run_cli(*tiny_study, "name=l", "hydra/launcher=local", "hydra.launcher.gpus_per_node=0", "activation=relu", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "l"
    pids = {stage: {metrics(d)["host"]["pid"] for d in (sweep / stage).iterdir() if (d / "metrics.json").exists()}
            for stage in ("tune", "confirm")}
    assert len(pids["tune"]) >= 2 and len(pids["confirm"]) == 1 and not pids["tune"] & pids["confirm"]  # fresh processes
    assert (sweep / "report.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad, message", [
    ("study.lrs=[]", "study.lrs"), ("study.seeds=[0,100]", "share [100]"), ("study.select=acc", "study.select"),
])
def test_bad_study_settings_get_one_line_before_training(tiny_study, tmp_path, bad, message):
    r = run_cli(*tiny_study, bad, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("actbench: error:") and message in r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.slow
def test_a_study_without_multirun_is_one_line(tiny_study, tmp_path):
    r = run_cli(*[a for a in tiny_study if a != "-m" and not a.startswith("activation=")], timeout=120)
    assert r.returncode == 2 and "start it with -m" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_further_nuisance_keys_are_searched_with_optuna(tiny_study, tmp_path):
    r = run_cli(*tiny_study, "name=o", "study.nuisance={optimizer.betas.0: {low: 0.8, high: 0.99}}", "study.trials=2", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "o"
    arms = json.loads((sweep / "study.json").read_text())["arms"]
    for arm in arms:
        assert len(arm["points"]) == 2 and all(len(p["overrides"]) == 2 for p in arm["points"])  # the rate and beta1
        assert arm["chosen"] == min(arm["points"], key=lambda p: p["score"])["overrides"]
        act = arm["activation"][0].split("=")[1]
        beta1 = float(arm["chosen"][1].split("=")[1])
        assert all(metrics(d)["config"]["optimizer"]["betas"][0] == pytest.approx(beta1)
                   for d in (sweep / "confirm").glob(f"activation={act},*"))
    # a quasi-random sampler proposes the same points to every activation, so they share packs
    assert [p["overrides"] for p in arms[0]["points"]] == [p["overrides"] for p in arms[1]["points"]]
    assert len(list((sweep / "tune" / ".packs").iterdir())) == 2


def test_the_answer_is_given_per_cell_of_the_other_swept_keys(tmp_path):
    from actbench.report.study import answer

    accs = {(1, "gelu"): [0.890, 0.892], (1, "relu"): [0.880, 0.883], (8, "gelu"): [0.870, 0.874], (8, "relu"): [0.878, 0.879]}
    for (depth, act), values in accs.items():
        for seed, acc in enumerate(values):
            write_run(tmp_path, {"activation": act, "model.depth": depth, "optimizer.lr": 0.001 * depth, "seed": seed}, acc)
    lines = answer(tmp_path, "test_acc", "relu", ("optimizer.lr",), 0.002, 0.05, 0.8)
    depth1, depth8 = [i for i, line in enumerate(lines) if "at its own tuned setting" in line]
    assert lines[depth1].startswith("With model.depth=1: at its own tuned setting, **gelu**")
    assert lines[depth8].startswith("With model.depth=8: at its own tuned setting, **relu**")
    # each cell's runner-up is the other activation of that cell, not the best of another cell
    assert lines[depth1 + 1].startswith("Against the runner-up relu: +0.95 pp") and "unadjusted" in lines[depth1 + 1]
    assert lines[depth8 + 1].startswith("Against the runner-up gelu: +0.65 pp")
