"""What TensorBoard's HParams tab shows: each run's session (its hparams when it starts, its status
when it ends), and the sweep's experiment, declared once at the root of the log directory users
open (`tensorboard --logdir runs/blog`): the keys the runs differ in, each with its type and its
values, and the metrics they are compared on.

The tab ticks the first five columns of the experiment, those marked `differs` first, the rest
alphabetically; so the experiment declares only the keys that differ, and the table opens on what
was swept and its metrics (a lone run: its activation, seed and the keys it was given). It prints
every number with five significant digits (seed 2 as 2.0000), so integers go as their decimal
strings, which also gives them the value filters that strings get; floats stay numbers, on a
numeric axis in the parallel coordinates.

TensorBoard takes the experiment from the first run that has one, and a tag's description from its
first event, so a run never writes one, and the root's file is replaced, not appended to: the
experiment is rewritten from every run's recorded hparams (metrics.json) after each multirun and
each run in a sweep directory (`SweepHParams`). Until then, TensorBoard infers the columns from the
sessions themselves.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback

from actbench import root_events
from actbench.results import NoRunsError, load_runs
from actbench.tags import DECLARED_METRICS

SUCCESS, FAILURE = "STATUS_SUCCESS", "STATUS_FAILURE"


# ---------------------------------------------------------------- values


# The config key each entry of `actbench.runs.hparams` comes from (`activation` also stands for the keys under it,
# which activation_label folds in; `model` and `model.<key>` are the model's own entries, named as its
# keys); a swept key not among them has no entry of its own.
HPARAM_SOURCES = {
    "activation": "activation", "seed": "seed", "optimizer.lr": "lr", "data.batch_size": "batch_size", "model": "model",
    "optimizer": "optimizer", "data": "data", "trainer.max_epochs": "max_epochs", "data.val_size": "val_size", "experiment": "experiment",
}


def hparam_name(key: str) -> str | None:
    """The entry of `hparams` an override key shows up as, or None."""
    if key in HPARAM_SOURCES:
        return HPARAM_SOURCES[key]
    if key.split(".")[0] == "activation":
        return "activation"
    if key.startswith("model."):
        return key.split(".", 1)[1]
    return None


def shown(value):
    """A value as the tab shows it: integers as decimal strings, None as 'none', anything that is
    not a bool, float or string as its text."""
    if value is None:
        return "none"
    if isinstance(value, (bool, float, str)):
        return value
    return str(value)


def column(key: str) -> str:
    """The column a config key shows in: its flat hparam's (optimizer.lr -> lr; the keys under
    activation are folded into activation's label), or its own name."""
    return hparam_name(key) or key


def session_hparams(hparams: dict, overrides: dict) -> dict:
    """A run's columns: its flat hparams, and any key it was given that they do not cover (a swept
    `optimizer.weight_decay`, say) under its own name, as typed."""
    extra = {k: str(v) for k, v in overrides.items() if column(k) == k and k not in hparams}
    return {k: shown(v) for k, v in {**hparams, **extra}.items()}


def _kind(value) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, float) else "string"


def _order(value):
    """Discrete values in their natural order: integers (as strings) by value, then the rest."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


# ---------------------------------------------------------------- protos


def _summary(tag: str, data):
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)])


ALWAYS = ("activation", "seed")  # what a lone run shows beside the keys it was given


def experiment(sessions: list[dict], given=()):
    """The experiment of these sessions' hparams: the keys that differ between them, each typed,
    with its values as its domain; None for no sessions. When none differs (a lone run), the
    activation, the seed and the columns of the keys the runs were `given` on the command line."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2

    if not sessions:
        return None
    keys = list(dict.fromkeys(k for s in sessions for k in s))
    values = {k: [s[k] for s in sessions if k in s] for k in keys}
    distinct = {k: sorted(set(v), key=_order) for k, v in values.items()}
    differs = [k for k in keys if len(distinct[k]) > 1]
    lone = {*ALWAYS, *given}
    infos = []
    for k in differs or [k for k in keys if k in lone] or keys:
        kinds = {_kind(v) for v in values[k]}
        info = api_pb2.HParamInfo(name=k, differs=len(distinct[k]) > 1)
        if len(kinds) > 1:
            # a column of mixed kinds gets no domain: TensorBoard would filter out the values of the other kind
            info.type = api_pb2.DATA_TYPE_STRING
        else:
            kind = kinds.pop()
            info.type = {"bool": api_pb2.DATA_TYPE_BOOL, "number": api_pb2.DATA_TYPE_FLOAT64}.get(kind, api_pb2.DATA_TYPE_STRING)
            field = {"bool": "bool_value", "number": "number_value"}.get(kind, "string_value")
            info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[struct_pb2.Value(**{field: v}) for v in distinct[k]]))
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in DECLARED_METRICS]
    return api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)


def write_session_start(writer, hparams: dict) -> None:
    """A run's session: its columns' values (as `session_hparams` gives them), when it started."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for k, v in hparams.items():
        value = info.hparams[k]
        if isinstance(v, bool):
            value.bool_value = v
        elif isinstance(v, float):
            value.number_value = v if math.isfinite(v) else 0.0
        else:
            value.string_value = str(v)
    writer.add_summary(_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info)))


def write_session_end(writer, status: str = SUCCESS) -> None:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=time.time())
    writer.add_summary(_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info)))


# ---------------------------------------------------------------- the root's experiment


def recorded_sessions(root: Path) -> tuple[list[dict], set]:
    """The sessions of every run under root that recorded its hparams, and the columns of the keys
    they were given."""
    try:
        runs = [r for r in load_runs(root) if r.section("hparams")]
    except NoRunsError:
        return [], set()
    return [session_hparams(r.section("hparams"), r.overrides) for r in runs], {column(k) for r in runs for k in r.overrides}


def write_experiment(root: Path | str) -> Path | None:
    """Declare the experiment of the runs under root in root's own events file, replacing the
    one written before; None when no run there has recorded hparams."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    root = Path(root)
    exp = experiment(*recorded_sessions(root))
    if exp is None:
        return None
    return root_events.write(root, [_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp))],
                             root_events.EXPERIMENT_SUFFIX)


def run_root(config) -> Path | None:
    """The sweep directory a single run sits in (`runs/<name>/`), or None when hydra.run.dir put
    it elsewhere: then its own directory is the log directory, and the tab infers its columns."""
    run_dir = Path(config.hydra.runtime.output_dir or config.hydra.run.dir).resolve()
    root = (Path(config.out_dir) / str(config.name)).resolve()
    return root if run_dir.parent == root else None


class SweepHParams(HydraCallback):
    """After a multirun, and after a single run in a sweep directory, declare that directory's
    experiment from what its runs recorded."""

    @staticmethod
    def _write(root: Path | None) -> None:
        try:
            if root is not None and root.is_dir():
                write_experiment(root)
        except Exception as e:  # noqa: BLE001 - TensorBoard's columns must not cost the runs their exit status
            print(f"actbench: could not declare the HParams experiment in {root}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def on_run_end(self, config, **kwargs) -> None:
        self._write(run_root(config))

    def on_multirun_end(self, config, **kwargs) -> None:
        self._write(Path(config.hydra.sweep.dir))
