"""actbench.train end to end through the CLI: runs, sweeps, outputs, reruns and bad input."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import NAMES_2x2, ROOT, compose_cfg, events, metrics, remount, run_cli

pytestmark = pytest.mark.slow


def hparams_of(ea: EventAccumulator):
    """The HParams experiment an event directory declares."""
    content = ea.PluginTagToContent("hparams")
    return plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment


def session_of(ea: EventAccumulator):
    content = ea.PluginTagToContent("hparams")
    return plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info


def test_one_run_writes_events_hparams_and_metrics(tiny_run, tmp_path):
    r = run_cli(*tiny_run, "activation=gelu", "seed=0")
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "runs" / "tiny" / "activation=gelu,seed=0"
    m = metrics(run_dir)
    assert m["status"] == "finished" and m["error"] is None
    assert m["overrides"] == {"activation": "gelu", "seed": 0}
    assert m["hparams"]["activation"] == "gelu" and m["hparams"]["seed"] == 0 and m["hparams"]["depth"] == 1
    assert m["curves"]["epoch"] == [1] and 0 <= m["final"]["test_acc"] <= 1
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "samples_per_s"} <= set(m["curves"])
    assert m["final"]["steps"] == -(-500 // 32) and m["versions"]["torch"] and m["device"] == "cpu"
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / ".hydra" / "config.yaml").exists()

    ea = events(run_dir)
    tags = set(ea.Tags()["scalars"])
    assert {"loss/train_step", "acc/train_step", "loss/train", "acc/train", "loss/val", "acc/val", "loss/test", "acc/test"} <= tags
    assert {"time/epoch", "time/epoch_s", "time/samples_per_s"} <= tags and "hp_metric" not in tags
    windows = ea.Scalars("loss/train_step")  # 16 steps logged as means over windows of 5
    assert [w.step for w in windows] == [5, 10, 15, 16]
    assert sum(w.value * n for w, n in zip(windows, [5, 5, 5, 1])) / 16 == pytest.approx(m["curves"]["train_loss"][0], rel=1e-5)
    assert ea.Scalars("acc/test")[-1].value == pytest.approx(m["final"]["test_acc"])
    # the experiment is the sweep directory's (a lone run: its activation, seed and what it was given), the session the run's
    exp, start = hparams_of(events(run_dir.parent)), session_of(ea)
    assert [h.name for h in exp.hparam_infos] == ["activation", "seed"]
    assert set(start.hparams) >= {"activation", "seed", "lr", "batch_size", "depth", "width", "init"}
    assert {mi.name.tag for mi in exp.metric_infos} >= {"acc/val", "acc/test"}
    assert start.hparams["activation"].string_value == "gelu" and start.hparams["seed"].string_value == "0"
    assert "test accuracy" in r.stdout and str(run_dir) in r.stdout


def test_multirun_two_activations_two_seeds(tiny_run, tmp_path):
    r = run_cli("-m", *tiny_run, "activation=relu,sigmoid", "seed=0,1", "report=none")
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "runs" / "tiny"
    names = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert names == NAMES_2x2
    assert all(metrics(sweep / n)["status"] == "finished" for n in names)
    assert (sweep / "multirun.yaml").exists()


def test_a_sweeps_runs_log_named_finite_scalars_their_hparams_and_their_lines(tiny_run, tmp_path):
    import math

    r = run_cli("-m", *tiny_run, "activation=relu,sigmoid", "seed=0,1", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "runs" / "tiny"
    probes = {f"probes/{s}/layer1" for s in ("dead", "saturated", "dact_mean")}
    probes |= {"probes/grad_norm/w1", "probes/grad_norm/w2", "probes/grad_ratio"}
    probes |= {"probes/grad_norm_step/w1", "probes/grad_norm_step/w2", "probes/grad_ratio_step"}
    curves = {f"{m}/{s}" for m in ("acc", "loss") for s in ("train", "train_step", "val", "test")}
    for name in NAMES_2x2:
        run_dir, m = sweep / name, metrics(sweep / name)
        ea = events(run_dir)
        tags = set(ea.Tags()["scalars"])
        assert tags == curves | probes | {"time/epoch", "time/epoch_s", "time/samples_per_s"}
        assert set(ea.Tags()["histograms"]) == {"probes/preact/layer1", "probes/act/layer1"}
        # TensorBoard's groups, in the order it shows them: the first (open) one is accuracy, then loss
        assert sorted({t.split("/")[0] for t in tags}) == ["acc", "loss", "probes", "time"]
        bad = [(t, e.step, e.value) for t in tags for e in ea.Scalars(t) if not math.isfinite(e.value)]
        assert not bad  # no NaN marker on any chart
        steps = m["final"]["steps"]
        assert [(e.step, e.value) for e in ea.Scalars("time/epoch")] == [(0, 0.0), (steps, 1.0)]
        assert [e.step for e in ea.Scalars("probes/grad_ratio")] == [steps]  # no gradient at initialisation: no point
        assert m["probes"]["probes/grad_ratio"][0] is None and m["probes"]["epoch"] == [0, 1]  # metrics.json stays aligned
        assert yaml.safe_load((run_dir / "hparams.yaml").read_text()) == {"hparams": m["hparams"], "config": m["config"]}
    # the job's train.log has every line it printed, as printed, after Hydra's time stamp
    (log,) = (sweep / ".packs").glob("*/train.log")
    lines = [line for line in r.stdout.splitlines() if line.startswith("activation=")]
    assert len(lines) == 5 and "epoch 1/1" in lines[0] and all("test accuracy" in line for line in lines[1:])
    logged = log.read_text().splitlines()
    assert [line.split("] - ", 1)[1] for line in logged if "[actbench]" in line] == lines


def test_a_diverging_run_logs_no_nan(tiny_run, tmp_path):
    import math

    r = run_cli(*tiny_run, "optimizer.lr=1e12", "trainer.max_epochs=2")
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").glob("optimizer.lr=*")
    m = metrics(run_dir)
    assert m["status"] == "diverged" and m["probes"]["probes/grad_ratio"] == [None, None]  # 0 / 0 in epoch 1
    ea = events(run_dir)
    assert all(math.isfinite(e.value) for t in ea.Tags()["scalars"] for e in ea.Scalars(t))
    assert "probes/grad_ratio" not in ea.Tags()["scalars"]
    assert "acc/val" in ea.Tags()["scalars"]  # what was finite in the diverging epoch is still there


def test_default_output_place_is_runs_under_the_working_directory_with_the_report(tiny_run, tmp_path):
    args = [a for a in tiny_run if not a.startswith("out_dir=")]
    r = run_cli("-m", *args, "seed=0,1", "report.metric=val_loss", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # the report's metric is a report setting, not part of what a run computes or its name
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["seed=0", "seed=1"]
    assert "Metric: val_loss" in (tmp_path / "runs" / "tiny" / "report.md").read_text()


def test_hydra_run_and_sweep_dirs_work_as_hydra_documents(tiny_run, tmp_path):
    one = run_cli(*tiny_run, f"hydra.run.dir={tmp_path / 'here'}")
    assert one.returncode == 0, one.stderr[-2000:]
    assert metrics(tmp_path / "here")["status"] == "finished"
    sweep = run_cli("-m", *tiny_run, f"hydra.sweep.dir={tmp_path / 'there'}", "seed=0,1", "report=none")
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "there").iterdir() if (p / "metrics.json").exists()) == ["seed=0", "seed=1"]


def test_same_seed_twice_gives_identical_metrics(tiny_run, tmp_path):
    a = run_cli(*tiny_run, "name=a", "seed=3")
    b = run_cli(*tiny_run, "name=b", "seed=3")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma, mb = (metrics(tmp_path / "runs" / n / "seed=3") for n in "ab")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert ma["curves"][key] == mb["curves"][key]
    assert ma["final"]["test_acc"] == mb["final"]["test_acc"] and ma["final"]["test_loss"] == mb["final"]["test_loss"]
    assert run_cli(*tiny_run, "name=c", "seed=4").returncode == 0
    assert metrics(tmp_path / "runs" / "c" / "seed=4")["curves"]["train_loss"] != ma["curves"]["train_loss"]


def test_rerun_refuses_a_directory_of_another_configuration(tiny_run, tmp_path):
    assert run_cli(*tiny_run, "seed=0").returncode == 0
    other = Path(tiny_run[1]) / "experiment" / "tiny_longer.yaml"  # same name, two epochs
    other.write_text((Path(tiny_run[1]) / "experiment" / "tiny.yaml").read_text().replace("max_epochs: 1", "max_epochs: 2"))
    r = run_cli(*[a if a != "experiment=tiny" else "experiment=tiny_longer" for a in tiny_run], "seed=0")
    assert r.returncode == 2 and "different configuration" in r.stderr
    assert "Traceback" not in r.stderr


def test_rerun_skips_a_finished_run_without_touching_it(tiny_run, tmp_path):
    assert run_cli(*tiny_run, "seed=0").returncode == 0
    run_dir = tmp_path / "runs" / "tiny" / "seed=0"
    # a lone run's directory is its Hydra job's: Hydra writes .hydra/ and train.log there at every start
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}
    hydra = {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    r = run_cli(*tiny_run, "seed=0")
    assert r.returncode == 0 and "already finished" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert {p: p.read_bytes() for p in hydra} == hydra


def test_a_packed_rerun_touches_no_finished_or_refused_member_hydra_included(tiny_run, tmp_path):
    assert run_cli(*tiny_run, "seeds=[0,1]").returncode == 0
    sweep = tmp_path / "runs" / "tiny"
    members = [sweep / "seed=0", sweep / "seed=1"]

    def files():
        return {p: p.stat().st_mtime_ns for d in members for p in d.rglob("*") if p.is_file()}

    before = files()
    assert {d / ".hydra" / "config.yaml" for d in members} <= set(before)
    again = run_cli(*tiny_run, "seeds=[0,1]")
    assert again.returncode == 0 and again.stdout.count("already finished") == 2
    assert files() == before
    conf = Path(tiny_run[1]) / "experiment" / "tiny.yaml"
    conf.write_text(conf.read_text().replace("system_dirs: []", "system_dirs: [], normalize: standardize"))
    other = run_cli(*tiny_run, "seeds=[0,1]")
    assert other.returncode == 2 and "different configuration" in other.stderr
    assert files() == before  # the refused members keep the .hydra/ of the configuration they hold


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.width=-3", "model.width=-3: must be an integer >= 1"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be an integer >= 1"),
        ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
        ("optimizer.schedule.decay=linear", "optimizer.schedule.decay='linear': must be none or cosine"),
        ("trainer.clip_norm=-1", "trainer.clip_norm=-1: must be null or a number > 0"),
    ],
)
def test_bad_values_get_one_line_before_training(tiny_run, tmp_path, override, message):
    r = run_cli(*tiny_run, override)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"actbench: error: {message}"]
    assert not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.parametrize("group, valid", [("activation", "gelu_tanh"), ("optimizer", "adamw"), ("experiment", "mnist1d, tiny")])
@pytest.mark.parametrize("multirun", [False, True])
def test_unknown_names_get_one_line_with_the_valid_ones(tiny_run, group, valid, multirun):
    r = run_cli(*(["-m"] if multirun else []), *tiny_run, f"{group}=nope" + (",blog" if group == "experiment" and multirun else ""))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"actbench: error: {group}='nope': no such {group}; valid: ") and valid in line


def test_missing_data_is_one_line_naming_both_ways(tiny_run, tmp_path):
    r = run_cli(*tiny_run, f"data.root={tmp_path / 'nowhere'}")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "apt-get install dataset-fashion-mnist" in line and "data.download=true" in line
    assert not list((tmp_path / "runs").rglob("metrics.json"))


def test_corrupt_data_names_the_file(tiny_run, tiny_data):
    f = tiny_data / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:20])
    r = run_cli(*tiny_run)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "train-labels-idx1-ubyte.gz" in line


TESTS = str(Path(__file__).resolve().parent)


@pytest.mark.parametrize("seeds", ["seed=5", "seeds=[5,6]", "seed=5 optimizer.schedule.decay=cosine trainer.clip_norm=0.5"])
def test_killed_run_resumes_to_the_same_result(tiny_run, tmp_path, seeds):
    """A resumed run goes on with its dropout masks, data order, and rate where it stopped."""
    from actbench.runs import run_name

    base = [*tiny_run, "trainer.max_epochs=3", "steps_per_execution=4", "model.dropout=0.2", *seeds.split()]
    killed = run_cli(*base, "name=k", "+callbacks.kill._target_=callbacks.KillAt", "+callbacks.kill.step=24", env={"PYTHONPATH": TESTS})
    assert killed.returncode != 0  # SIGKILL in epoch 2 (16 steps per epoch)
    name = run_name(["model.dropout=0.2", "seed=5", "trainer.max_epochs=3", *seeds.split()[1:]])
    run_dir = tmp_path / "runs" / "k" / name
    assert metrics(run_dir)["status"] == "running" and metrics(run_dir)["curves"]["epoch"] == [1]

    resumed = run_cli(*base, "name=k")
    assert resumed.returncode == 0 and "resuming after epoch 1" in resumed.stdout
    whole = run_cli(*base, "name=u")
    assert whole.returncode == 0
    a, b = metrics(run_dir), metrics(tmp_path / "runs" / "u" / name)
    assert a["status"] == "finished" and a["timing"]["resumed_at_epoch"] == 1
    assert a["curves"]["epoch"] == b["curves"]["epoch"] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc"):  # dropout masks and data order come back too
        assert a["curves"][key] == pytest.approx(b["curves"][key], rel=1e-6)
    assert a["final"]["test_loss"] == pytest.approx(b["final"]["test_loss"], rel=1e-6)
    # one TensorBoard run: the killed attempt's steps past the checkpoint are purged, not duplicated
    steps = [e.step for e in events(run_dir).Scalars("loss/train")]
    assert steps == sorted(set(steps)) and len(steps) == 3


def test_crashed_run_is_recorded_failed_and_retried(tiny_run, tmp_path):
    crash = run_cli(*tiny_run, "+callbacks.boom._target_=callbacks.RaiseAt", "+callbacks.boom.step=4", env={"PYTHONPATH": TESTS})
    assert crash.returncode != 0
    m = metrics(tmp_path / "runs" / "tiny" / "default")
    assert m["status"] == "failed" and "planted failure" in m["error"]
    retry = run_cli(*tiny_run)
    assert retry.returncode == 0 and metrics(tmp_path / "runs" / "tiny" / "default")["status"] == "finished"


def test_a_model_that_fails_to_build_is_one_line_saying_where(tiny_run, tmp_path):
    broken = run_cli(*tiny_run, "model._target_=models.Broken", env={"PYTHONPATH": TESTS})
    last = broken.stderr.strip().splitlines()[-1]
    assert broken.returncode == 2 and last.startswith("actbench: error: model (models.Broken) fails to build: "
                                                      "RuntimeError: planted model failure (models.py:")
    assert not list((tmp_path / "runs").rglob("metrics.json"))  # before anything trained


def test_a_failed_run_of_another_configuration_is_refused_if_it_has_a_checkpoint_else_retried(tiny_run, tmp_path):
    boom = ["trainer.max_epochs=2", "+callbacks.boom._target_=callbacks.RaiseAt"]
    with_ckpt = run_cli(*tiny_run, "seed=0", *boom, "+callbacks.boom.step=20", env={"PYTHONPATH": TESTS})  # in epoch 2
    without = run_cli(*tiny_run, "seed=1", *boom, "+callbacks.boom.step=4", env={"PYTHONPATH": TESTS})  # in epoch 1
    assert with_ckpt.returncode == without.returncode == 1
    sweep = tmp_path / "runs" / "tiny"
    kept, retried = sweep / "seed=0,trainer.max_epochs=2", sweep / "seed=1,trainer.max_epochs=2"
    assert (kept / "checkpoints" / "last.ckpt").exists() and not (retried / "checkpoints").exists()
    old = metrics(kept)
    conf = Path(tiny_run[1]) / "experiment" / "tiny.yaml"  # the same run names, another computation
    conf.write_text(conf.read_text().replace("system_dirs: []", "system_dirs: [], normalize: standardize"))

    refused = run_cli(*tiny_run, "seed=0", "trainer.max_epochs=2")
    assert refused.returncode == 2, refused.stdout[-2000:]
    assert refused.stderr.strip().splitlines() == [
        f"actbench: error: {kept} holds a run of a different configuration (another preset, or conf/ changed); "
        "give this sweep another name= or delete that directory"
    ]
    assert metrics(kept) == old and (kept / "checkpoints" / "last.ckpt").exists()
    retry = run_cli(*tiny_run, "seed=1", "trainer.max_epochs=2")
    assert retry.returncode == 0, retry.stderr[-2000:]
    m = metrics(retried)
    assert m["status"] == "finished" and m["timing"]["resumed_at_epoch"] is None and m["curves"]["epoch"] == [1, 2]
    assert m["config"]["data"]["normalize"] == "standardize" and m["config_hash"] != old["config_hash"]


def test_interrupted_run_is_recorded_interrupted_and_resumed(tiny_run, tmp_path):
    args = [*tiny_run, "trainer.max_epochs=3"]
    stop = run_cli(*args, "+callbacks.stop._target_=callbacks.InterruptAt", "+callbacks.stop.step=40", env={"PYTHONPATH": TESTS})
    assert stop.returncode != 0 and "interrupted (" in stop.stderr and "the same command resumes it" in stop.stderr
    run_dir = tmp_path / "runs" / "tiny" / "trainer.max_epochs=3"
    m = metrics(run_dir)
    assert m["status"] == "interrupted" and "resumes" in m["error"] and "traceback" not in m
    again = run_cli(*args)
    assert again.returncode == 0 and "resuming after epoch 2" in again.stdout, again.stdout[-2000:]
    assert metrics(run_dir)["status"] == "finished"


def test_diverging_run_is_marked_and_the_sweep_goes_on(tiny_run, tmp_path):
    r = run_cli("-m", *tiny_run, "trainer.max_epochs=2", "optimizer.lr=0.001,1e12", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "runs" / "tiny"
    (bad_dir,) = sweep.glob("optimizer.lr=1000000000000.0,*")
    (good_dir,) = sweep.glob("optimizer.lr=0.001,*")
    bad, good = metrics(bad_dir), metrics(good_dir)
    assert bad["status"] == "diverged" and "loss" in bad["error"] and bad["curves"]["epoch"] == [1]
    assert good["status"] == "finished" and good["curves"]["epoch"] == [1, 2]
    # a rerun leaves the diverged run diverged: it is not resumed into a "finished" one
    again = run_cli("-m", *tiny_run, "trainer.max_epochs=2", "optimizer.lr=0.001,1e12", "report=none")
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    assert metrics(bad_dir) == bad


def test_packed_seeds_equal_seeds_run_apart(tiny_run, tmp_path):
    packed = run_cli(*tiny_run, "name=p", "seeds=[0,1,2]", "max_pack=2", "model.dropout=0.2", "activation=gelu")
    apart = run_cli("-m", *tiny_run, "name=a", "seed=0,1,2", "model.dropout=0.2", "activation=gelu", "report=none", "pack=false")
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    assert "training them in packs of 2" in packed.stdout
    import torch

    for s in range(3):
        name = f"activation=gelu,model.dropout=0.2,seed={s}"
        p, a = tmp_path / "runs" / "p" / name, tmp_path / "runs" / "a" / name
        mp, ma = metrics(p), metrics(a)
        assert mp["overrides"] == ma["overrides"] and mp["hparams"] == ma["hparams"]
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert mp["curves"][key] == pytest.approx(ma["curves"][key], rel=1e-5, abs=1e-6)
        assert mp["final"]["test_loss"] == pytest.approx(ma["final"]["test_loss"], rel=1e-5)
        step_p, step_a = ([(e.step, e.value) for e in events(d).Scalars("loss/train_step")] for d in (p, a))
        assert [st for st, _ in step_p] == [st for st, _ in step_a]  # each seed's own per-step curve
        assert [v for _, v in step_p] == pytest.approx([v for _, v in step_a], rel=1e-5)
        wp = torch.load(p / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        wa = torch.load(a / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert wp.keys() == wa.keys()
        for k in wp:
            assert torch.allclose(wp[k], wa[k], rtol=1e-5, atol=1e-6), k


def test_packed_multirun_writes_what_an_unpacked_one_does(tiny_run, tmp_path):
    packed = run_cli("-m", *tiny_run, "name=p", "activation=relu,sigmoid", "seeds=[0,1]")
    apart = run_cli("-m", *tiny_run, "name=a", "activation=relu,sigmoid", "seed=0,1")
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]

    def tree(sweep):
        return sorted(str(p.relative_to(sweep)) for p in sweep.rglob("*") if ".packs" not in p.parts and "events" not in p.name
                      and p.suffix not in (".log", ".yaml") and p.name != ".hydra")

    p, a = tmp_path / "runs" / "p", tmp_path / "runs" / "a"
    assert tree(p) == tree(a)
    for name in NAMES_2x2:
        assert set(metrics(p / name)) == set(metrics(a / name))
        assert set(metrics(p / name)["curves"]) == set(metrics(a / name)["curves"])
        assert set(metrics(p / name)["probes"]) == set(metrics(a / name)["probes"])
        assert len(list((p / name).glob("events.out.tfevents.*"))) >= 1
    # a rerun of the packed sweep skips all four
    again = run_cli("-m", *tiny_run, "name=p", "activation=relu,sigmoid", "seeds=[0,1]")
    assert again.stdout.count("already finished") == 4


def test_pack_limit_follows_free_memory(monkeypatch):
    import torch

    from actbench import placement

    cfg = compose_cfg()
    monkeypatch.setattr(placement, "available_memory", lambda device: 4 * 2**30)
    roomy = placement.pack_limit(cfg, torch.device("cpu"))
    monkeypatch.setattr(placement, "available_memory", lambda device: 2**30)
    tight = placement.pack_limit(cfg, torch.device("cpu"))
    assert roomy > 4 * tight >= 4


def test_threads_auto_uses_one_thread_for_small_steps_only(monkeypatch):
    from actbench import placement

    monkeypatch.setattr(placement, "usable_cpus", lambda: 8)
    monkeypatch.setattr(placement, "side_by_side_jobs", lambda: 1)
    blog, paper, fixed = (compose_cfg(*o) for o in ([], ["experiment=gelu_paper"], ["threads=3"]))
    assert placement.cpu_threads(blog, 1) == 1
    assert placement.cpu_threads(paper, 1) == 8
    assert placement.cpu_threads(blog, 25) == 8  # a big pack has enough work per step to split
    assert placement.cpu_threads(fixed, 1) == 3
    assert placement.cpu_threads(paper, 1, recorded=2) == 2  # a resumed run keeps the count it started with
    monkeypatch.setattr(placement, "side_by_side_jobs", lambda: 4)
    assert placement.cpu_threads(paper, 1) == 2  # four jobs share the eight cores


def test_ddp_on_two_cpu_processes_matches_one_device(tiny_run, tmp_path):
    ddp = run_cli(*tiny_run, "name=d", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2")
    one = run_cli(*tiny_run, "name=o", "trainer.max_epochs=2")
    assert ddp.returncode == 0 and one.returncode == 0, ddp.stderr[-2000:] + one.stderr[-2000:]
    (d,) = (tmp_path / "runs" / "d").glob("*/metrics.json")
    (o,) = (tmp_path / "runs" / "o").glob("*/metrics.json")
    md, mo = json.loads(d.read_text()), json.loads(o.read_text())
    # each device takes half of every batch and DDP averages the gradients: the same updates
    assert md["curves"]["val_loss"] == pytest.approx(mo["curves"]["val_loss"], rel=1e-4)
    assert md["final"]["test_loss"] == pytest.approx(mo["final"]["test_loss"], rel=1e-4)
    assert md["final"]["steps"] == mo["final"]["steps"] and md["status"] == "finished"


def test_activation_label_shows_changed_activation_keys():
    from actbench.runs import activation_label

    assert activation_label("leaky", ["seed=1"]) == "leaky"
    assert activation_label("leaky", ["activation.negative_slope=0.2"]) == "leaky(negative_slope=0.2)"
    assert activation_label("relu", ["+activation._target_=torch.nn.Softsign"]) == "relu(_target_=torch.nn.Softsign)"


# ---------------------------------------------------------------- automatic packing


def run_dirs(sweep: Path) -> list[str]:
    return sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_twins(packed_dir: Path, apart_dir: Path) -> None:
    """A packed member and its pack=false twin: the same run, the same numbers."""
    mp, ma = metrics(packed_dir), metrics(apart_dir)
    assert mp["status"] == ma["status"] == "finished"
    assert set(mp) == set(ma) and set(mp["curves"]) == set(ma["curves"]) and set(mp["probes"]) == set(ma["probes"])
    assert (mp["overrides"], mp["hparams"], mp["config_hash"]) == (ma["overrides"], ma["hparams"], ma["config_hash"])
    assert mp["curves"]["val_loss"] == pytest.approx(ma["curves"]["val_loss"], abs=1e-3)
    assert mp["final"]["test_acc"] == pytest.approx(ma["final"]["test_acc"], abs=2e-3)


def test_a_multirun_packs_activations_and_seeds_into_one_job(tiny_run, tmp_path):
    sweep = ["activation=relu,sigmoid", "seed=0,1", "trainer.max_epochs=2", "model.dropout=0.1", "report=none"]
    packed = run_cli("-m", *tiny_run, "name=p", *sweep)
    apart = run_cli("-m", *tiny_run, "name=a", *sweep, "pack=false")
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    assert "Launching 1 jobs" in packed.stdout + packed.stderr and "Launching 4 jobs" in apart.stdout + apart.stderr
    p, a = tmp_path / "runs" / "p", tmp_path / "runs" / "a"
    names = [f"{n.replace(',seed', ',model.dropout=0.1,seed')},trainer.max_epochs=2" for n in NAMES_2x2]
    assert run_dirs(p) == run_dirs(a) == names
    assert len(list((p / ".packs").iterdir())) == 1
    for name in names:
        assert_twins(p / name, a / name)
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # a packed product only adds in another order
            assert metrics(p / name)["curves"][key] == pytest.approx(metrics(a / name)["curves"][key], rel=1e-5)
        writers = {f.name.split(".")[-2] for f in (p / name).glob("events.out.tfevents.*")}  # .<pid>.<n>
        assert len(writers) == 1  # one process wrote this member's TensorBoard run
        own, twin = (set(yaml.safe_load((d / name / ".hydra" / "overrides.yaml").read_text())) for d in (p, a))
        assert own - {"name=p"} == twin - {"name=a", "pack=False"}  # the .hydra/ an unpacked job of it has
        hp, ha = (yaml.safe_load((d / name / ".hydra" / "hydra.yaml").read_text())["hydra"] for d in (p, a))
        assert set(hp["overrides"]["task"]) == own and hp["runtime"]["output_dir"] == str(p / name)
        assert hp["job"]["override_dirname"] == ha["job"]["override_dirname"] and hp["runtime"]["choices"] == ha["runtime"]["choices"]
    # a pack=false rerun finds the packed runs finished
    again = run_cli("-m", *tiny_run, "name=p", *sweep, "pack=false")
    assert again.returncode == 0 and again.stdout.count("already finished") == 4


def test_a_sweep_over_the_learning_rate_makes_one_pack_per_rate(tiny_run, tmp_path):
    r = run_cli("-m", *tiny_run, "activation=relu,sigmoid", "optimizer.lr=0.001,0.01", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "runs" / "tiny"
    assert "Launching 2 jobs" in r.stdout + r.stderr and len(list((sweep / ".packs").iterdir())) == 2
    assert len(run_dirs(sweep)) == 4 and all(metrics(sweep / n)["status"] == "finished" for n in run_dirs(sweep))


def test_a_users_own_activation_packs_with_relu(tiny_run, tmp_path):
    (Path(tiny_run[1]) / "activation").mkdir()
    (Path(tiny_run[1]) / "activation" / "mine.yaml").write_text("_target_: torch.nn.Softsign\n")
    sweep = ["activation=relu,mine", "seed=3", "report=none"]
    packed = run_cli("-m", *tiny_run, "name=p", *sweep)
    apart = run_cli("-m", *tiny_run, "name=a", *sweep, "pack=false")
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    assert "(+1 packed)" in packed.stdout and "mean of 2:" in packed.stdout  # a pack's line says it gives means
    for name in ("activation=mine,seed=3", "activation=relu,seed=3"):
        assert_twins(tmp_path / "runs" / "p" / name, tmp_path / "runs" / "a" / name)
    assert metrics(tmp_path / "runs" / "p" / "activation=mine,seed=3")["hparams"]["activation"] == "mine"


def test_rerunning_a_half_finished_packed_sweep_skips_resumes_and_starts_the_right_members(tiny_run, tmp_path):
    base = ["-m", *tiny_run, "activation=relu,sigmoid", "trainer.max_epochs=3", "report=none"]
    assert run_cli(*base, "seed=0").returncode == 0  # two members finished
    killed = run_cli(*base, "seed=0,1", "+callbacks.kill._target_=callbacks.KillAt", "+callbacks.kill.step=24",
                     env={"PYTHONPATH": TESTS})
    assert killed.returncode != 0 and killed.stdout.count("already finished") == 2  # SIGKILL in epoch 2 of seed 1's pack
    rerun = run_cli(*base, "seed=0,1,2")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.count("already finished") == 2
    assert rerun.stdout.count("resuming after epoch 1") == 1 and "(+1 packed): resuming" in rerun.stdout  # seed 1's two, together
    whole = run_cli("-m", *[a if not a.startswith("out_dir=") else f"out_dir={tmp_path / 'whole'}" for a in tiny_run],
                    "activation=relu,sigmoid", "trainer.max_epochs=3", "report=none", "seed=0,1,2")
    assert whole.returncode == 0
    for act in ("relu", "sigmoid"):
        for seed in (0, 1, 2):
            name = f"activation={act},seed={seed},trainer.max_epochs=3"
            m, w = metrics(tmp_path / "runs" / "tiny" / name), metrics(tmp_path / "whole" / "tiny" / name)
            assert m["status"] == "finished" and m["timing"]["resumed_at_epoch"] == (1 if seed == 1 else None)
            assert m["curves"]["val_loss"] == pytest.approx(w["curves"]["val_loss"], rel=1e-6)
            assert m["final"]["test_loss"] == pytest.approx(w["final"]["test_loss"], rel=1e-6)


def test_packed_members_match_their_unpacked_twins_on_the_real_data(real_data_dir, tmp_path):
    common = ["-m", f"data.root={tmp_path}", f"data.system_dirs=[{real_data_dir}]", f"data.cache_dir={tmp_path / 'cache'}",
              f"out_dir={tmp_path / 'runs'}", "activation=relu,gelu,sigmoid", "seed=0", "trainer.max_epochs=1",
              "probes.activations.histograms=false", "report=none"]
    packed = run_cli(*common, "name=p", timeout=600)
    apart = run_cli(*common, "name=a", "pack=false", timeout=600)
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    for act in ("relu", "gelu", "sigmoid"):
        name = f"activation={act},seed=0,trainer.max_epochs=1"
        assert_twins(tmp_path / "runs" / "p" / name, tmp_path / "runs" / "a" / name)


# ---------------------------------------------------------------- one owner per run


BUSY = re.compile(r"^(?P<name>\S+): trained by pid (?P<pid>\d+) on host (?P<host>\S+) since (?P<since>\S+); skipped$", re.M)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`run_cli`, started in the background."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "actbench.train", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def writer_pids(run_dir: Path) -> set[int]:
    """The processes that wrote a run's TensorBoard events (their files end in .<pid>.<n>)."""
    return {int(f.name.split(".")[-2]) for f in run_dir.glob("events.out.tfevents.*")}


@pytest.mark.parametrize("pack", ["pack=true", "pack=false"])
def test_two_processes_on_one_sweep_train_each_run_once(tiny_run, tmp_path, pack):
    # enough epochs that one process is still training a run when the other reaches it
    sweep = ["-m", *tiny_run, "activation=relu,sigmoid", "seed=0,1", "trainer.max_epochs=40", "report=none", pack]
    procs = [start_cli(*sweep), start_cli(*sweep)]  # the same command, at the same moment
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    pids = [p.pid for p in procs]
    lone = run_cli(*sweep, "name=lone")
    assert lone.returncode == 0, lone.stderr[-2000:]

    names = [f"{n},trainer.max_epochs=40" for n in NAMES_2x2]
    busy = [(k, m) for k, (out, _) in enumerate(outs) for m in BUSY.finditer(out)]
    assert busy, "neither process found a run owned by the other: " + outs[0][0][-1000:] + outs[1][0][-1000:]
    for k, m in busy:  # the loser names the winner: the other process, on this host
        assert int(m["pid"]) == pids[1 - k] and m["host"] == socket.gethostname() and m["name"] in names
        print(f"process {k + 1} printed: {m.group(0)}")
    sweep_dir, lone_dir = tmp_path / "runs" / "tiny", tmp_path / "runs" / "lone"
    for name in names:
        m, alone = metrics(sweep_dir / name), metrics(lone_dir / name)
        assert m["status"] == "finished" and m["timing"]["resumed_at_epoch"] is None
        (writer,) = writer_pids(sweep_dir / name)  # one process wrote its TensorBoard run
        assert writer in pids and m["host"]["pid"] == writer
        assert sum(out.count(f"{name}: test accuracy") for out, _ in outs) == 1  # and trained it, once
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert m["curves"][key] == pytest.approx(alone["curves"][key], rel=1e-5, abs=1e-7)
        assert m["final"]["test_loss"] == pytest.approx(alone["final"]["test_loss"], rel=1e-5)
        assert not list((sweep_dir / name).glob(".*.tmp")) and not (sweep_dir / name / ".owner.json").exists()


def test_a_killed_owner_is_taken_over_and_its_run_resumed(tiny_run, tmp_path):
    from actbench.ownership import INTERRUPTED, owner
    from actbench.results import load_run

    base = [*tiny_run, "trainer.max_epochs=3"]
    paused = tmp_path / "paused"
    first = start_cli(*base, "+callbacks.pause._target_=callbacks.PauseAt", "+callbacks.pause.step=24",
                      f"+callbacks.pause.signal_file={paused}", env={"PYTHONPATH": TESTS})
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():  # in epoch 2, its epoch-1 checkpoint written
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        run_dir = tmp_path / "runs" / "tiny" / "trainer.max_epochs=3"
        assert owner(run_dir).pid == first.pid
        live = load_run(run_dir)
        assert live.status == "running" and live.error.startswith(f"trained by pid {first.pid} on host ")

        second = run_cli(*base)  # while the owner lives: leaves the run alone
        assert second.returncode == 0, second.stderr[-2000:]
        (m,) = BUSY.finditer(second.stdout)
        assert (m["name"], int(m["pid"])) == ("trainer.max_epochs=3", first.pid)
        print(f"second process printed: {m.group(0)}")
        assert writer_pids(run_dir) == {first.pid} and metrics(run_dir)["curves"]["epoch"] == [1]
    finally:
        first.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        first.communicate()
    assert metrics(run_dir)["status"] == "running" and owner(run_dir) is None
    stale = load_run(run_dir)
    assert (stale.status, stale.error) == ("interrupted", INTERRUPTED)

    third = run_cli(*base)
    assert third.returncode == 0, third.stderr[-2000:]
    line = f"trainer.max_epochs=3: was running (pid {first.pid} on host {socket.gethostname()}), but its process is gone"
    assert line in third.stdout.splitlines() and "resuming after epoch 1 (step 16)" in third.stdout
    print(f"third process printed: {line}")
    whole = run_cli(*base, "name=u")
    assert whole.returncode == 0
    a, b = metrics(run_dir), metrics(tmp_path / "runs" / "u" / "trainer.max_epochs=3")
    assert a["status"] == "finished" and a["timing"]["resumed_at_epoch"] == 1 and a["host"]["pid"] != first.pid
    for key in ("train_loss", "val_loss", "val_acc"):
        assert a["curves"][key] == pytest.approx(b["curves"][key], rel=1e-6)
    assert a["final"]["test_loss"] == pytest.approx(b["final"]["test_loss"], rel=1e-6)
    ea = events(run_dir)
    for tag in ea.Tags()["scalars"]:  # the killed attempt's epoch 2 purged, not doubled, in every curve
        steps = [e.step for e in ea.Scalars(tag)]
        assert steps == sorted(set(steps)), tag


def test_a_full_disk_fails_the_run_keeps_its_checkpoint_and_the_rerun_resumes(tiny_run, tmp_path, tmpfs):
    import torch

    from actbench.checkpoints import resume_point

    # room for one checkpoint (1.2 MB for the 784-128-10 model and Adam's moments) and the small
    # files, not for a second one beside it: epoch 2's checkpoint fills the disk
    disk = tmpfs("1800k")
    args = [*(a for a in tiny_run if not a.startswith("out_dir=")), f"out_dir={disk}", "trainer.max_epochs=3"]
    full = run_cli(*args)
    assert full.returncode == 1
    assert full.stderr.strip().splitlines() == [
        "trainer.max_epochs=3: failed: OSError: [Errno 28] No space left on device (details in its metrics.json)"
    ]
    run_dir = disk / "tiny" / "trainer.max_epochs=3"
    m = metrics(run_dir)
    assert m["status"] == "failed" and m["error"] == "OSError: [Errno 28] No space left on device"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert resume_point(ckpt) == (16, 1)  # epoch 1's, whole
    assert torch.load(ckpt, weights_only=False)["actbench_seed"] == 0
    assert [p.name for p in disk.rglob("*") if "tmp" in p.name] == []  # no temporary file left behind

    remount(disk, "size=8m")  # space freed: the same command resumes from the last good checkpoint
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trainer.max_epochs=3: resuming after epoch 1 (step 16)" in again.stdout
    whole = run_cli(*tiny_run, "name=whole", "trainer.max_epochs=3")
    assert whole.returncode == 0
    a, b = metrics(run_dir), metrics(tmp_path / "runs" / "whole" / "trainer.max_epochs=3")
    assert a["status"] == "finished" and a["timing"]["resumed_at_epoch"] == 1 and a["curves"]["epoch"] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert a["curves"][key] == pytest.approx(b["curves"][key], rel=1e-6)
    assert a["final"]["test_loss"] == pytest.approx(b["final"]["test_loss"], rel=1e-6)


def test_a_read_only_sweep_directory_is_one_line_before_any_training(tiny_run, tmpfs):
    disk = tmpfs("64k")
    remount(disk, "ro")
    args = [*(a for a in tiny_run if not a.startswith("out_dir=")), f"out_dir={disk}"]
    sweep = run_cli("-m", *args, "seed=0,1")
    assert sweep.returncode == 2
    assert sweep.stderr.strip().splitlines() == [f"actbench: error: {disk}/tiny: cannot write here (Read-only file system)"]
    assert "Launching" not in sweep.stdout + sweep.stderr  # before Hydra's first job
    one = run_cli(*args, "seed=0")
    assert one.returncode == 2
    assert one.stderr.strip().splitlines() == [f"actbench: error: {disk}/tiny/seed=0: cannot write here (Read-only file system)"]


def test_ddp_ranks_past_the_first_follow_rank_0(monkeypatch, tmp_path):
    from actbench import train
    from actbench.record import RunRecord

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", train.LEADER_ENV):
        monkeypatch.delenv(var, raising=False)
    ddp, one = compose_cfg("trainer=ddp", "trainer.accelerator=cpu"), compose_cfg()
    assert not train.ddp_follower(ddp)
    monkeypatch.setenv("LOCAL_RANK", "0")  # rank 0 itself, once Lightning's launcher has run
    assert not train.ddp_follower(ddp)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train.ddp_follower(ddp) and train.ddp_follower(one)  # Lightning's launcher set it: any trainer
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_PROCID", "2")
    assert train.ddp_follower(ddp) and not train.ddp_follower(one)  # a SLURM task is a rank only under DDP

    runs = [RunRecord(f"seed={s}", tmp_path / f"seed={s}", s, {}, {}, {}) for s in range(3)]
    monkeypatch.setenv(train.LEADER_ENV, json.dumps({"runs": [str(runs[2].dir), str(runs[0].dir)], "resume": [16, 1]}))
    assert train.follow(runs, ddp) == ({(16, 1): [runs[0], runs[2]]}, True)


def test_a_ddp_follower_writes_no_metrics_even_when_it_fails_before_training(monkeypatch, tmp_path):
    from actbench import train
    from actbench.record import Recorder, RunRecord

    runs = [RunRecord(f"seed={s}", tmp_path / f"seed={s}", s, {}, {}, {}) for s in range(2)]
    monkeypatch.setenv(train.LEADER_ENV, json.dumps({"runs": [str(r.dir) for r in runs], "resume": [16, 1]}))
    (pack,) = train.follow(runs, compose_cfg("trainer=ddp", "trainer.accelerator=cpu"))[0].values()
    # a failure in setup (restoring the checkpoint, memory) comes before the recorder's on_fit_start
    Recorder(pack, tmp_path / "last.ckpt", resume_epoch=1).fail(RuntimeError("CUDA out of memory"))
    assert not list(tmp_path.rglob("metrics.json"))  # rank 0's files are rank 0's to write


def test_ddp_ranks_plan_the_same_packs_whatever_memory_each_has_free(monkeypatch, tmp_path):
    from actbench import train
    from actbench.record import RunRecord

    def packs(cfg, fit: int) -> list:
        planned = []
        monkeypatch.setattr(train, "pack_limit", lambda cfg, device: fit)
        monkeypatch.setattr(train, "fit_pack", lambda pack, point, claims=None: planned.append([r.seed for r in pack]))
        runs = [RunRecord(f"seed={s}", tmp_path / f"seed={s}", s, {}, {}, {}, cfg=cfg) for s in range(3)]
        assert train.train_packs({None: runs}, cfg, speak=False) == []
        return planned

    common = ["max_pack=2", "data.root=data"]  # a plain data.root: no Hydra run to resolve the default's
    ddp = compose_cfg("trainer=ddp", "trainer.accelerator=cpu", *common)
    assert packs(ddp, 1) == packs(ddp, 8) == [[0, 1], [2]]
    assert packs(compose_cfg(*common), 1) == [[0], [1], [2]]  # one process: its free memory bounds a pack


def test_a_pack_whose_lease_was_taken_over_stops_before_writing(tmp_path):
    from types import SimpleNamespace

    from actbench import train
    from actbench.claims import Claims
    from actbench.record import RunRecord

    runs = [RunRecord(f"seed={s}", tmp_path / f"seed={s}", s, {}, {}, {}) for s in range(2)]
    claims = Claims(locks={runs[0].dir: SimpleNamespace(held=True), runs[1].dir: SimpleNamespace(held=True)})
    check = train.still_owned(runs, claims)
    check.on_train_epoch_end(None, None)  # still ours: nothing happens
    claims.locks[runs[1].dir].held = False  # its lease was not renewed in time and another took it
    with pytest.raises(RuntimeError, match="seed=1: no longer owned by this process"):
        check.on_train_epoch_end(None, None)
    assert [r.writes for r in runs] == [True, False]  # the lost run's files are the new owner's


def test_a_sweep_preset_without_multirun_says_it_trains_one_run(capfd):
    from hydra import compose, initialize_config_dir

    from actbench.conf import CONF_DIR
    from actbench.train import SweepWithoutMultirun

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        swept, plain = (compose("train", overrides=o, return_hydra_config=True) for o in (["experiment=vanishing"], []))
    SweepWithoutMultirun().on_run_start(swept)
    assert "sweeps activation, model.depth, seed, but without -m it trains one run" in capfd.readouterr().err
    SweepWithoutMultirun().on_run_start(plain)
    assert not capfd.readouterr().err


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_every_logged_hparam_has_the_config_key_it_comes_from(model):
    from actbench.hparams_tab import HPARAM_SOURCES, hparam_name
    from actbench.runs import MEASURED_HPARAMS, hparams

    cfg = compose_cfg(f"model={model}")
    flat = hparams(cfg, {"activation": "relu", "optimizer": "adam"}, 0, [])
    model_keys = {f"model.{k}" for k in cfg.model if not str(k).startswith("_")}
    sources = {hparam_name(k) for k in [*HPARAM_SOURCES, *model_keys]}
    # the HParams tab names a swept key's column by it: an entry without its source would get a second column
    assert set(flat) == sources | set(MEASURED_HPARAMS)


def test_a_run_killed_before_its_first_checkpoint_says_it_starts_over(tmp_path, capsys):
    from types import SimpleNamespace

    from actbench.runs import pending

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running", "config_hash": "h", "host": {"pid": 123, "hostname": "n1"},
                                                      "curves": {"epoch": [1]}}))
    r = SimpleNamespace(name="r", dir=run_dir, config_hash="h")
    todo = pending([r], SimpleNamespace(skip_finished=True, checkpoint_name="last.ckpt"))
    assert todo == {None: [r]}  # no checkpoint: from the start
    assert capsys.readouterr().out.strip() == ("r: was running (pid 123 on host n1), but its process is gone; "
                                               "no checkpoint of its 1 recorded epoch(s), so it starts over")
