"""actbench.hparams_tab: what TensorBoard's HParams tab gets, read back through TensorBoard's own
backend: the sweep's experiment at the root (what differs, typed, with its values), one session
per run, and a single run's columns."""

from __future__ import annotations

import json
import math

import pytest
from tensorboard.plugins.hparams import api_pb2

from actbench import hparams_tab
from conftest import NAMES_2x2, hparams_api, metrics, run_cli, write_run

STRING, FLOAT64 = api_pb2.DATA_TYPE_STRING, api_pb2.DATA_TYPE_FLOAT64


def domain(info) -> list:
    return [json.loads(json.dumps(v.string_value if v.HasField("string_value") else v.number_value))
            for v in info.domain_discrete.values]


def cell(group, name):
    v = group.hparams[name]
    return v.string_value if v.HasField("string_value") else v.number_value


# ---------------------------------------------------------------- the experiment from sessions


def test_only_what_differs_is_declared_with_its_values_in_order():
    sessions = [hparams_tab.session_hparams({"activation": a, "seed": s, "lr": 0.001, "depth": d, "init": "torch"}, {})
                for a in ("relu", "gelu") for s in (2, 10) for d in (1, 16)]
    exp = hparams_tab.experiment(sessions)
    infos = {h.name: h for h in exp.hparam_infos}
    assert set(infos) == {"activation", "seed", "depth"}  # lr and init are the same everywhere
    assert all(h.differs for h in infos.values())
    assert infos["activation"].type == STRING and domain(infos["activation"]) == ["gelu", "relu"]
    # integers go as strings (the tab prints numbers as 2.0000), ordered by value, not as text
    assert infos["seed"].type == STRING and domain(infos["seed"]) == ["2", "10"]
    assert domain(infos["depth"]) == ["1", "16"]
    assert [m.name.tag for m in exp.metric_infos] == ["acc/test", "acc/val", "loss/test", "loss/val"]


def test_floats_stay_numbers_and_mixed_kinds_get_no_domain():
    sessions = [{"lr": 0.01, "mix": 0.5}, {"lr": 0.001, "mix": "none"}]
    infos = {h.name: h for h in hparams_tab.experiment(sessions).hparam_infos}
    assert infos["lr"].type == FLOAT64 and domain(infos["lr"]) == [0.001, 0.01]
    # a domain of strings would make the tab's filter drop the sessions whose value is a number
    assert infos["mix"].type == STRING and not infos["mix"].HasField("domain_discrete")


def test_a_lone_run_declares_its_activation_seed_and_the_keys_it_was_given():
    flat = {"activation": "gelu", "seed": 0, "lr": 0.01, "depth": 1, "init": "torch"}
    session = hparams_tab.session_hparams(flat, {"optimizer.lr": 0.01})
    exp = hparams_tab.experiment([session], {hparams_tab.column("optimizer.lr")})
    assert [(h.name, h.differs) for h in exp.hparam_infos] == [("activation", False), ("seed", False), ("lr", False)]
    assert hparams_tab.experiment([]) is None


def test_a_swept_key_outside_the_flat_hparams_gets_a_column():
    flat = {"activation": "leaky(negative_slope=0.2)", "seed": 1, "lr": 0.001}
    overrides = {"activation": "leaky", "activation.negative_slope": 0.2, "seed": 1, "optimizer.lr": 0.001,
                 "optimizer.weight_decay": 0.01}
    assert hparams_tab.session_hparams(flat, overrides) == {
        "activation": "leaky(negative_slope=0.2)", "seed": "1", "lr": 0.001, "optimizer.weight_decay": "0.01"}


# ---------------------------------------------------------------- the root's file


def test_the_root_experiment_is_replaced_not_appended(tmp_path):
    write_run(tmp_path, {"activation": "relu", "seed": 0})
    first = hparams_tab.write_experiment(tmp_path)
    write_run(tmp_path, {"activation": "gelu", "seed": 1})
    second = hparams_tab.write_experiment(tmp_path)
    assert not first.exists() and list(tmp_path.glob("*tfevents*")) == [second]
    assert not list(tmp_path.glob(".*tmp"))
    exp, _ = hparams_api(tmp_path)  # TensorBoard keeps a tag's first description: only the new one must be there
    infos = {h.name: h for h in exp.hparam_infos}
    assert set(infos) == {"activation", "seed"} and domain(infos["activation"]) == ["gelu", "relu"]


def test_nothing_is_declared_where_no_run_recorded_hparams(tmp_path):
    assert hparams_tab.write_experiment(tmp_path) is None and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_2x2_sweep_opens_on_what_it_swept(tiny_run, tmp_path):
    r = run_cli("-m", *tiny_run, "activation=relu,sigmoid", "seed=0,1", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "runs" / "tiny"
    assert len(list(sweep.glob("events.out.tfevents.*"))) == 1  # declared once, at the root
    for name in NAMES_2x2:  # a run declares no experiment that could be picked instead of the root's
        assert "_hparams_/experiment" not in b"".join(f.read_bytes() for f in (sweep / name).glob("events.out.tfevents.*")).decode("latin-1")

    exp, groups = hparams_api(sweep)
    infos = {h.name: h for h in exp.hparam_infos}
    # the tab ticks the first five, those that differ first: here activation and seed, and no constant key
    assert list(infos) == ["activation", "seed"]
    assert infos["activation"].differs and infos["activation"].type == STRING and domain(infos["activation"]) == ["relu", "sigmoid"]
    assert infos["seed"].differs and infos["seed"].type == STRING and domain(infos["seed"]) == ["0", "1"]
    constant = set(metrics(sweep / NAMES_2x2[0])["hparams"]) - {"activation", "seed"}
    assert constant >= {"lr", "batch_size", "depth", "width", "init", "dropout", "optimizer"} and not constant & set(infos)
    assert [m.name.tag for m in exp.metric_infos] == ["acc/test", "acc/val", "loss/test", "loss/val"]

    # one row per run, its values as the filters expect them, every declared metric filled in
    rows = {g.name: g for g in groups.session_groups}
    assert sorted(rows) == NAMES_2x2
    for name, g in rows.items():
        m = metrics(sweep / name)
        assert cell(g, "activation") == m["hparams"]["activation"] and cell(g, "seed") == str(m["hparams"]["seed"])
        values = {v.name.tag: v.value for v in g.metric_values}
        assert set(values) == set(hparams_tab.DECLARED_METRICS) and all(math.isfinite(v) for v in values.values())
        assert values["acc/test"] == pytest.approx(m["final"]["test_acc"])
        assert [s.status for s in g.sessions] == [api_pb2.STATUS_SUCCESS]
