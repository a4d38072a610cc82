"""Tests for actbench.results, the one reader of what runs wrote: metrics.json read back, runs
found under a sweep, grouped into configurations, and probe values found by the names the
probes give them (actbench.tags)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as st

from actbench import ownership, record, results, tags
from actbench.ownership import Owner
from conftest import make_metrics, write_run, write_sweep


def test_read_metrics_is_tolerant(tmp_path):
    assert results.read_metrics(tmp_path) is None and results.read_metrics(tmp_path / "nowhere") is None
    (tmp_path / results.METRICS_FILE).write_text('{"status": "fini')
    assert results.read_metrics(tmp_path) is None
    (tmp_path / results.METRICS_FILE).write_text("[1, 2]")
    assert results.read_metrics(tmp_path) is None
    (tmp_path / results.METRICS_FILE).write_text(json.dumps({"schema": results.SCHEMA, "status": "finished"}))
    assert results.read_metrics(tmp_path) == {"schema": 1, "status": "finished"}


def test_what_the_writer_writes_the_reader_reads(tmp_path):
    run = record.RunRecord("activation=relu,seed=0", tmp_path / "activation=relu,seed=0", 0, {"activation": "relu", "seed": 0},
                     {"activation": "relu", "seed": 0}, {})
    run.start(0, "cpu", 0.0)
    run.end(results.Status.FINISHED)
    back = results.load_run(run.dir)
    assert (back.status, back.error, back.seed, back.activation) == ("finished", None, 0, "relu")
    assert back.metrics["schema"] == results.SCHEMA


def test_a_newer_schema_reads_as_corrupt_and_older_ones_are_read(tmp_path):
    d = write_run(tmp_path, {"activation": "relu", "seed": 0}, 0.885)
    m = json.loads((d / "metrics.json").read_text())
    newer = results.SCHEMA + 1
    for schema, status, error in [
        (newer, "corrupt", f"metrics.json schema {newer} is newer than this actbench reads ({results.SCHEMA})"),
        ("2", "corrupt", "metrics.json schema '2' is not a schema version"),
        (results.SCHEMA, "finished", None),
        (None, "finished", None),  # written before metrics.json had a schema
    ]:
        (d / "metrics.json").write_text(json.dumps({k: v for k, v in {**m, "schema": schema}.items() if v is not None}))
        run = results.load_run(d)
        assert (run.status, run.error) == (status, error), schema
        assert run.overrides == {"activation": "relu", "seed": 0}
        assert results.exclusion_reason(run, "test_acc") == error
        assert (run.metrics == {}) == (status == "corrupt")  # no table reads a layout it does not know


def test_a_running_runs_owner_is_asked_once(tmp_path, monkeypatch):
    # each answer may take seconds (a claim settling), and two answers may disagree
    d = write_run(tmp_path, {"activation": "relu", "seed": 0}, 0.5, status="running")
    answers = [Owner(host="node7", pid=4242, since="2026-12-01T10:00:00Z"), None]
    asked = []

    def owner(run_dir, **kwargs):
        asked.append(run_dir)
        return answers[len(asked) - 1]

    monkeypatch.setattr(ownership, "owner", owner)
    monkeypatch.setattr(results, "owner", owner)
    run = results.load_run(d)
    assert asked == [d]
    assert (run.status, run.error) == ("running", f"trained by {answers[0]}")
    answers.reverse()
    asked.clear()
    run = results.load_run(d)
    assert asked == [d]
    assert (run.status, run.error) == ("interrupted", ownership.INTERRUPTED)


def test_run_values_and_identity(tmp_path):
    d = write_run(tmp_path, {"activation": "gelu", "seed": 3}, 0.885, epoch_s=1.5)
    run = results.load_run(d)
    assert (run.name, run.status, run.error, run.seed, run.activation) == (d.name, "finished", None, 3, "gelu")
    assert run.value("test_acc") == 0.885 and run.value("wall_s") == 60.0  # final, then timing
    assert math.isnan(run.value("nothing")) and run.epoch_s() == 1.5


def test_missing_and_corrupt_runs_keep_their_names(tmp_path):
    (tmp_path / "activation=relu,seed=4" / ".hydra").mkdir(parents=True)
    corrupt = tmp_path / "activation=relu,seed=3"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text("{")
    write_run(tmp_path, {"activation": "relu", "seed": 0})
    runs = {r.name: r for r in results.load_runs(tmp_path)}
    assert runs["activation=relu,seed=4"].status == "missing"
    assert runs["activation=relu,seed=4"].overrides == {"activation": "relu", "seed": 4}
    assert runs["activation=relu,seed=3"].status == "corrupt"
    assert "unreadable metrics.json" in runs["activation=relu,seed=3"].error


def test_not_a_sweep(tmp_path):
    with pytest.raises(results.NoRunsError, match="no such directory"):
        results.load_runs(tmp_path / "nowhere")
    write_run(tmp_path / ".submitit", {"activation": "relu", "seed": 0})  # launcher state, never a run
    with pytest.raises(results.NoRunsError, match="not a sweep directory"):
        results.load_runs(tmp_path)


def test_exclusion_reasons(tmp_path):
    ok = results.load_run(write_run(tmp_path, {"activation": "relu", "seed": 0}))
    failed = results.load_run(write_run(tmp_path, {"activation": "relu", "seed": 1}, status="failed", error="OOM"))
    nan = results.load_run(write_run(tmp_path, {"activation": "relu", "seed": 2}, float("nan")))
    assert results.exclusion_reason(ok, "test_acc") is None
    assert results.exclusion_reason(failed, "test_acc") == "OOM"
    assert "not finite" in results.exclusion_reason(nan, "test_acc")


def test_grouping_and_a_seed_run_twice(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884], "gelu": [0.886, 0.889]})
    twice = tmp_path / "again"
    write_run(twice, {"activation": "relu", "seed": 0}, 0.890)
    runs = results.load_runs(tmp_path) + results.load_runs(twice)
    configs = {c.activation: c for c in results.group_runs(runs)}
    assert configs["relu"].by_seed("test_acc") == pytest.approx({0: (0.880 + 0.890) / 2, 1: 0.884})
    assert list(configs["gelu"].values("test_acc")) == pytest.approx([0.886, 0.889])
    assert results.varying_keys(list(configs.values())) == ["activation"]


# ---------------------------------------------------------------- probes


def test_probe_names_come_from_tags():
    m = make_metrics({"activation": "relu", "model.depth": 3, "seed": 0}, 0.88)
    assert results.layer_tags(m, tags.DEAD) == [tags.layer_tag(tags.DEAD, i) for i in (1, 2, 3)]
    assert results.grad_norm_tags(m) == [tags.grad_norm_tag(j) for j in (1, 2, 3, 4)]
    assert results.probe_values(m, tags.GRAD_RATIO) == m["probes"]["probes/grad_ratio"]
    assert results.probe_epochs(m) == [0, 1, 2, 3] and results.has_probes(m)
    assert not results.has_probes(make_metrics({"activation": "relu", "seed": 0}, 0.88, probes=False))


def test_reading_probes_imports_neither_torch_nor_lightning(tmp_path):
    # `python -m actbench.report` reads a sweep; importing Lightning would add seconds to every report
    sweep = tmp_path / "sweep"
    write_sweep(sweep, {"relu": [0.80, 0.81], "gelu": [0.82, 0.83]})
    code = (
        "import sys; from actbench import results, tags; "
        f"runs = results.load_runs({str(sweep)!r}); "
        "assert all(results.layer_tags(r.metrics, tags.DEAD) for r in runs) and all(results.has_probes(r.metrics) for r in runs); "
        "[results.dead_final(r.metrics) for r in runs]; [results.grad_ratio_gmean(r.metrics) for r in runs]; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_old_tag_name_is_read_through_an_alias(monkeypatch):
    m = make_metrics({"activation": "relu", "seed": 0}, 0.88)
    m["probes"]["old_ratio"] = m["probes"].pop("probes/grad_ratio")
    assert results.probe_values(m, tags.GRAD_RATIO) is None
    monkeypatch.setitem(results.PROBE_ALIASES, tags.GRAD_RATIO, ("old_ratio",))
    assert results.probe_values(m, tags.GRAD_RATIO) == m["probes"]["old_ratio"]
    assert results.grad_ratio_gmean(m) == pytest.approx(st.gmean(m["probes"]["old_ratio"][1:]))


def test_dead_final_and_grad_ratio_by_hand():
    m = make_metrics({"activation": "relu", "model.depth": 2, "seed": 0}, 0.88)
    last = [m["probes"]["probes/dead/layer1"][-1], m["probes"]["probes/dead/layer2"][-1]]
    assert results.dead_final(m) == pytest.approx((np.mean(last), np.max(last)))
    m["probes"]["probes/grad_ratio"] = [None, 0.5, 2.0, 0.0]  # epoch 0 has no gradient; a zero ratio has no logarithm
    assert results.grad_ratio_gmean(m) == pytest.approx(1.0)
    assert all(math.isnan(v) for v in results.dead_final({"probes": {}}))


def test_a_packed_runs_epoch_is_its_share_of_the_packs(tmp_path):
    alone = results.load_run(write_run(tmp_path / "a", {"activation": "relu", "seed": 0}, epoch_s=1.5))
    packed_dir = write_run(tmp_path / "p", {"activation": "relu", "seed": 0}, epoch_s=6.0)
    m = json.loads((packed_dir / "metrics.json").read_text())
    m["timing"]["members"] = 4  # one of four members of a pack whose epochs took 6 s
    (packed_dir / "metrics.json").write_text(json.dumps(m))
    assert alone.epoch_s() == 1.5 and results.load_run(packed_dir).epoch_s() == 1.5
