"""actbench.record: metrics.json stays aligned, valid JSON and whole."""

import json
import math

from actbench.record import RunRecord, clean, read_metrics
from actbench.tags import json_name


def new_run(tmp_path) -> RunRecord:
    run = RunRecord("seed=0", tmp_path / "seed=0", 0, {"seed": 0}, {"seed": 0}, {})
    run.start(0, "cpu", 0.0)
    return run


def test_rows_stay_aligned_when_a_value_is_missing_some_epochs(tmp_path):
    run = new_run(tmp_path)
    run.append("curves", {"epoch": 1, "train_loss": 0.5})  # validation skipped in epoch 1
    run.append("curves", {"epoch": 2, "train_loss": 0.4, "val_loss": 0.45})
    run.append("curves", {"epoch": 3, "train_loss": 0.3})
    curves = run.metrics["curves"]
    assert curves["epoch"] == [1, 2, 3]
    assert curves["val_loss"] == [None, 0.45, None] and curves["train_loss"] == [0.5, 0.4, 0.3]


def test_written_file_is_strict_json_with_nulls_for_non_finite(tmp_path):
    run = new_run(tmp_path)
    run.append("curves", {"epoch": 1, "train_loss": math.nan, "val_loss": math.inf})
    run.end("diverged", "training loss became nan")
    text = (run.dir / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)
    assert m["curves"]["train_loss"] == [None] and m["status"] == "diverged"
    assert not list(run.dir.glob(".*tmp"))  # written through a temporary file, then renamed


def test_resume_keeps_the_curves_up_to_the_checkpoint(tmp_path):
    run = new_run(tmp_path)
    for e in (1, 2, 3):
        run.append("curves", {"epoch": e, "train_loss": 1.0 / e})
        run.append("probes", {"epoch": e - 1, "dead/layer1": 0.1 * e})
    run.write()
    again = RunRecord("seed=0", run.dir, 0, {"seed": 0}, {"seed": 0}, {})
    again.start(2, "cpu", 0.0)  # the checkpoint holds 2 finished epochs
    assert again.metrics["curves"]["epoch"] == [1, 2]
    assert again.metrics["probes"]["epoch"] == [0, 1, 2]  # epoch 0 is at initialisation
    assert again.metrics["timing"]["resumed_at_epoch"] == 2


def test_resume_keeps_the_probe_rows_up_to_the_checkpoint_by_their_epoch(tmp_path):
    run = new_run(tmp_path)
    for e in (1, 2, 3):
        run.append("curves", {"epoch": e, "train_loss": 1.0 / e})
    for e in (2, 3):  # probes switched on at a resume after epoch 1: their first row is epoch 2's
        run.append("probes", {"epoch": e, "probes/dead/layer1": 0.1 * e})
    run.write()
    again = RunRecord("seed=0", run.dir, 0, {"seed": 0}, {"seed": 0}, {})
    again.start(2, "cpu", 0.0)
    assert again.metrics["probes"] == {"epoch": [2], "probes/dead/layer1": [0.2]}
    assert again.metrics["curves"]["epoch"] == [1, 2]


def test_the_median_epoch_time_is_the_one_results_compute(tmp_path):
    from types import SimpleNamespace

    from actbench.record import Recorder
    from actbench.stats import nanmedian

    run = new_run(tmp_path)
    times = [1.0, 2.0, 4.0, 9.0]
    for e, t in enumerate(times, 1):
        run.append("curves", {"epoch": e, "epoch_s": t})
    logger = SimpleNamespace(log_metrics=lambda *a, **k: None, experiment=SimpleNamespace(flush=lambda: None))
    recorder = Recorder([run], tmp_path / "last.ckpt")
    recorder.speaks = False  # no TensorBoard writer behind this logger
    recorder.on_test_end(SimpleNamespace(loggers=[logger], global_step=4), SimpleNamespace(epoch_log={}))
    m = read_metrics(run.dir)
    assert m["status"] == "finished" and m["timing"]["epoch_s_median"] == nanmedian(times) == 3.0


def test_helpers(tmp_path):
    assert clean({"a": [1.0, math.nan], "b": (math.inf,)}) == {"a": [1.0, None], "b": [None]}
    # the names metrics.json's curves and final metrics get from the recorder's tags
    assert json_name("loss/train") == "train_loss" and json_name("time/epoch_s") == "epoch_s"
    assert json_name("acc/test") == "test_acc"
    (tmp_path / "metrics.json").write_text("{ half")
    assert read_metrics(tmp_path) is None and read_metrics(tmp_path / "nowhere") is None


def test_a_resume_that_fails_before_training_keeps_the_curves(tmp_path):
    from actbench.checkpoints import CheckpointError
    from actbench.record import Recorder

    run = new_run(tmp_path)
    for e in (1, 2):
        run.append("curves", {"epoch": e, "train_loss": 1.0 / e})
    run.write()
    again = RunRecord("seed=0", run.dir, 0, {"seed": 0}, {"seed": 0}, {})
    # the checkpoint is restored (and can fail) before the recorder's on_fit_start
    Recorder([again], tmp_path / "last.ckpt", resume_epoch=2).fail(CheckpointError("unreadable checkpoint"))
    m = read_metrics(run.dir)
    assert m["status"] == "failed" and "unreadable checkpoint" in m["error"]
    assert m["curves"]["epoch"] == [1, 2]


def test_a_full_disk_keeps_the_last_good_metrics_and_no_temporary_file(tmpfs):
    import errno

    import pytest

    disk = tmpfs("64k")
    run = new_run(disk)
    good = (run.dir / "metrics.json").read_bytes()
    run.metrics["config"] = {"filler": "x" * 200_000}
    with pytest.raises(OSError) as caught:
        run.write()
    assert caught.value.errno == errno.ENOSPC
    assert (run.dir / "metrics.json").read_bytes() == good
    assert sorted(p.name for p in run.dir.iterdir()) == ["metrics.json"]


def test_recording_a_failure_the_disk_refuses_raises_no_second_error(tmp_path, monkeypatch):
    import errno
    import os

    from actbench import record
    from actbench.record import Recorder

    run = new_run(tmp_path)
    good = (run.dir / "metrics.json").read_bytes()

    def full(path, content, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    lines = []
    monkeypatch.setattr(record, "atomic_write", full)
    monkeypatch.setattr(record, "warn", lines.append)
    Recorder([run], tmp_path / "last.ckpt").fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))  # returns: the caller re-raises the first
    assert (run.dir / "metrics.json").read_bytes() == good  # still "running", which reads interrupted once we are gone
    assert lines == ["seed=0: could not record it as failed (No space left on device)"]
