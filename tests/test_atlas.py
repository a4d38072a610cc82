"""actbench.atlas and the atlas sweeper: the settings and their checks, which overrides go where,
and the whole atlas through the CLI (a setting without data skipped in one line, a rerun that
trains nothing, a killed atlas that resumes)."""

import json

import pytest

from actbench import atlas
from actbench.errors import ConfigError
from conftest import metrics, run_cli

TESTS = __import__("pathlib").Path(__file__).resolve().parent


# ---------------------------------------------------------------- settings


def test_settings_split_a_settings_study_keys_from_its_jobs_and_only_picks_some():
    plan = atlas.settings({"settings": {"mlp": [], "cnn": ["model=cnn", "study.lrs=[1e-3]"], "gpt": ["experiment=glu_lm"]}})
    assert [(s.name, s.overrides, s.study) for s in plan] == [("mlp", (), ()), ("cnn", ("model=cnn",), ("study.lrs=[1e-3]",)),
                                                               ("gpt", ("experiment=glu_lm",), ())]
    assert [s.name for s in atlas.settings({"settings": {"a": [], "b": []}, "only": ["b"]})] == ["b"]
    assert atlas.study_node({"lrs": [1.0], "seeds": [0]}, plan[1]) == {"lrs": [1e-3], "seeds": [0]}


def test_a_setting_overrides_the_atlas_and_its_preset_replaces_the_atlas_preset():
    base = ["experiment=atlas", "activation=relu,gelu", "trainer.max_epochs=2", "model.depth=1", "study.lrs=[1e-3]", "atlas.only=[x]"]
    jobs = atlas.Setting("deep", ("model.depth=8",)).jobs(base)
    assert jobs == ["experiment=atlas", "activation=relu,gelu", "trainer.max_epochs=2", "model.depth=8"]  # the sweeper's keys stay with it
    assert atlas.Setting("lm", ("experiment=glu_lm",)).jobs(base) == ["activation=relu,gelu", "trainer.max_epochs=2", "model.depth=1",
                                                                     "experiment=glu_lm"]  # its preset instead of the atlas's


def test_atlas_json_keeps_the_settings_an_earlier_command_ran(tmp_path):
    atlas.write(tmp_path, ["relu"], {"a": {"overrides": [], "report": None, "skipped": None}})
    atlas.write(tmp_path, ["relu"], {"b": {"overrides": ["model=cnn"], "report": None, "skipped": "no data"}})  # atlas.only=[b]
    assert list(atlas.read(tmp_path)["settings"]) == ["a", "b"] and atlas.read(tmp_path)["settings"]["b"]["skipped"] == "no data"


@pytest.mark.parametrize("node, message", [
    ({"settings": {}}, "atlas.settings={}"),
    ({"settings": {"a b": []}}, "atlas.settings.a b: a setting's name"),
    ({"settings": {"a": "model=cnn"}}, "must be a list of overrides"),
    ({"settings": {"a": ["activation=gelu"]}}, "is the atlas's to set"),
    ({"settings": {"a": ["seed=3"]}}, "is the atlas's to set"),
    ({"settings": {"a": ["hydra/launcher=slurm"]}}, "is the atlas's to set"),
    ({"settings": {"a": []}, "only": ["b"]}, "atlas.only=['b']"),
])
def test_bad_settings_name_the_key(node, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        atlas.settings(node)


# ---------------------------------------------------------------- the whole atlas through the CLI

def finished(sweep):
    return {d.relative_to(sweep): metrics(d)["timing"]["ended"] for d in sweep.glob("*/*/*")
            if (d / "metrics.json").exists() and metrics(d)["status"] == "finished"}


@pytest.mark.slow
def test_the_atlas_runs_a_study_per_setting_skips_one_without_data_and_resumes(tiny_atlas, tmp_path):
    killed = run_cli(*tiny_atlas, "+callbacks.kill._target_=callbacks.KillInStage", "+callbacks.kill.stage=cnn/confirm",
                     env={"PYTHONPATH": str(TESTS)}, timeout=600)
    assert killed.returncode != 0
    sweep = tmp_path / "runs" / "tiny_atlas"
    before = finished(sweep)
    assert {p.parts[0] for p in before} == {"mlp", "cnn"} and not any(p.parts[:2] == ("cnn", "confirm") for p in before)
    launches = [line for line in killed.stdout.splitlines() + killed.stderr.splitlines() if "Launching" in line]
    assert "Launching 2 jobs" in launches[0]  # the two settings' tune stages side by side, one pack each
    r = run_cli(*tiny_atlas, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    skipped = [line for line in r.stdout.splitlines() if line.startswith("atlas: nodata: skipped")]
    assert len(skipped) == 1 and "CIFAR-10 not found" in skipped[0]
    after = finished(sweep)
    assert all(after[p] == t for p, t in before.items())  # what finished before the kill was not trained again
    for name, lr in (("mlp", 0.01), ("cnn", 0.003)):  # each setting's own grid, confirmed on both seeds
        confirm = sorted((sweep / name / "confirm").glob("activation=*"))
        assert len(confirm) == 4 and all(metrics(d)["config"]["optimizer"]["lr"] == lr for d in confirm)
        assert (sweep / name / "report.md").exists() and (sweep / name / "study.json").exists()
    cnn = metrics(next((sweep / "cnn" / "confirm").glob("activation=*")))["config"]
    assert cnn["model"]["channels"] == [4] and cnn["name"] == "tiny"  # its own preset, in place of the atlas's
    assert metrics(next((sweep / "mlp" / "confirm").glob("activation=*")))["config"]["name"] == "tiny_atlas"
    plan = json.loads((sweep / "atlas.json").read_text())
    assert plan["activations"] == ["relu", "sigmoid"] and "CIFAR-10 not found" in plan["settings"]["nodata"]["skipped"]
    text = (sweep / "report.md").read_text()
    assert "## The answer" in text and "![forest plot](forest.png)" in text and "| sigmoid |" in text and "- nodata: skipped" in text
    conf = tmp_path / "conf" / "experiment" / "tiny_atlas.yaml"  # the atlas's own list is no run's identity:
    conf.write_text(conf.read_text().replace("    nodata:", "    nodata2: [data=cifar10, data.root=/nonexistent2]\n    nodata:"))
    again = run_cli(*tiny_atlas, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert finished(sweep) == after  # a setting more, and a finished atlas still trains nothing on rerun


@pytest.mark.slow
def test_a_bad_setting_is_one_line_naming_it_before_anything_trains(tiny_atlas, tmp_path):
    conf = tmp_path / "conf" / "experiment" / "tiny_atlas.yaml"
    conf.write_text(conf.read_text().replace("model.width=16", "model.width=-3"))
    r = run_cli(*tiny_atlas, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("actbench: error: atlas.settings.cnn:")
    assert "Traceback" not in r.stderr and not list((tmp_path / "runs").rglob("metrics.json"))
