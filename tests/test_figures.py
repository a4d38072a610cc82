"""Tests for actbench.figures: every figure is written and linked from the report, skipped with a
note when its data is absent, and styled consistently across figures."""

from __future__ import annotations

import math
import shutil

import pytest

from actbench import figures, report, results
from conftest import make_metrics, write_run, write_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def figure_sweep(tmp_path_factory):
    """5 activations x 2 depths x 2 seeds with probes, rendered once for the figure tests."""
    sweep = tmp_path_factory.mktemp("figs")
    accs = {"relu": 0.885, "gelu": 0.888, "gelu_tanh": 0.887, "sigmoid": 0.86, "my_act": 0.87}
    spread = {"relu": 0.002, "gelu": 0.003, "gelu_tanh": 0.0005, "sigmoid": 0.004, "my_act": 0.001}  # paired differences vary
    for act, acc in accs.items():
        for depth in (1, 3):
            for seed in (0, 1):
                write_run(sweep, {"activation": act, "model.depth": depth, "seed": seed}, acc - 0.004 * depth + spread[act] * seed)
    return sweep, report.write_report(sweep).read_text()


@pytest.mark.parametrize("name", ["loss_curves.png", "test_acc.png", "improvement.png", "activations.png", "probes.png"])
def test_figure_written_and_linked(figure_sweep, name):
    sweep, text = figure_sweep
    data = (sweep / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert f"]({name})" in text


def test_an_activation_that_cannot_be_built_is_noted(figure_sweep):
    _, text = figure_sweep  # my_act: neither recorded by its runs nor shipped
    assert "could not be built here" in text and "my_act (ValueError" in text.split("## Figures")[1]


def test_a_users_activation_is_drawn_as_its_runs_recorded_it(tmp_path, monkeypatch):
    import json

    from actbench import activations

    for act in ("relu", "my_hardswish"):
        for seed in (0, 1):
            run = write_run(tmp_path, {"activation": act, "seed": seed}, 0.88 + 0.001 * seed)
            m = json.loads((run / "metrics.json").read_text())
            m["config"] = {"activation": {"_target_": "torch.nn.ReLU" if act == "relu" else "torch.nn.Hardswish"}}
            (run / "metrics.json").write_text(json.dumps(m))
    built = []
    monkeypatch.setattr(activations, "build", lambda cfg, build=activations.build: built.append(dict(cfg)) or build(cfg))
    text = report.write_report(tmp_path).read_text()
    assert {"_target_": "torch.nn.Hardswish"} in built and "could not be built" not in text


def test_probe_figure_skipped_without_probes(tmp_path):
    write_sweep(tmp_path, {"relu": [0.88, 0.881], "gelu": [0.885, 0.886]}, probes=False)
    text = report.write_report(tmp_path).read_text()
    assert not (tmp_path / "probes.png").exists()
    assert "Probes: skipped: no run recorded probes" in text
    assert (tmp_path / "loss_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_figure_colours_follow_activation():
    from actbench.figures import Series, styles

    series = [Series("relu, d=1", "relu", {"d": 1}), Series("relu, d=4", "relu", {"d": 4}),
              Series("gelu, d=1", "gelu", {"d": 1}), Series("mine", "mine", {"d": 1})]
    s = styles(series)
    assert s["relu, d=1"][0] == s["relu, d=4"][0] != s["gelu, d=1"][0]
    assert s["relu, d=1"][1] != s["relu, d=4"][1] and s["relu, d=1"][1] == s["gelu, d=1"][1]
    assert s["mine"][0] not in {s["relu, d=1"][0], s["gelu, d=1"][0]}


def test_improvement_figure_grows_with_the_configurations(tmp_path):
    from PIL import Image

    def series(n):
        return [figures.Series(f"act{i}, model.depth={2 ** i}", f"act{i}", {"model.depth": 2**i},
                               p_improve=i / max(n - 1, 1), p_improve_ci=(max(0.0, i / n - 0.2), min(1.0, i / n + 0.2)))
                for i in range(n)]

    heights = {}
    for n in (2, 20):
        path, note = figures.improvement(series(n), tmp_path / f"improvement{n}.png")
        assert (path, note) == (tmp_path / f"improvement{n}.png", "")
        heights[n] = Image.open(path).size[1]
    assert heights[20] > 3 * heights[2]


def test_improvement_skipped_without_tests(tmp_path):
    untested = [figures.Series("relu", "relu"), figures.Series("gelu", "gelu")]  # p_improve NaN: no test
    path, note = figures.improvement(untested, tmp_path / "improvement.png", baseline="relu")
    assert path is None and "relu" in note and "2 seeds" in note
    assert not (tmp_path / "improvement.png").exists()


def test_improvement_values_come_from_the_comparisons(figure_sweep, monkeypatch, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(figure_sweep[0], sweep)
    drawn = {}

    def spy(series, path, baseline="relu"):
        drawn.update({s.label: (s.p_improve, s.p_improve_ci) for s in series})
        return None, "spied"

    monkeypatch.setattr(figures, "improvement", spy)
    report.write_report(sweep)
    configs = results.group_runs(results.load_runs(sweep))
    comparisons, _ = report.compare(configs)
    keys = results.varying_keys(configs)
    for c in comparisons:
        assert drawn[report.label(c.config, keys)] == (c.result.p_improve, c.result.p_improve_ci)
    baselines = [label for label in drawn if label.startswith("relu")]
    assert baselines and all(math.isnan(drawn[b][0]) for b in baselines)


def test_the_report_shows_its_figures_first_in_tensorboard(figure_sweep):
    from actbench import tags
    from conftest import events

    sweep, _ = figure_sweep
    shown = {tag: image.encoded_image_string for tag in events(sweep).Tags()["images"] for image in events(sweep).Images(tag)}
    assert shown == {
        "acc/_report": (sweep / "test_acc.png").read_bytes(),
        "acc/_report_p_better": (sweep / "improvement.png").read_bytes(),
        "loss/_report": (sweep / "loss_curves.png").read_bytes(),
        "probes/_report": (sweep / "probes.png").read_bytes(),
        "probes/_report_activations": (sweep / "activations.png").read_bytes(),
    }
    # each leads its group, whose cards TensorBoard sorts by tag
    logged = [tags.metric_tag(m, s) for m in (tags.ACC, tags.LOSS) for s in (tags.TRAIN, tags.VAL, tags.TEST)]
    logged += [tags.step_tag(tags.ACC), tags.layer_tag(tags.DEAD, 1), tags.grad_norm_tag(1), tags.GRAD_RATIO]
    for tag in shown:
        group = tag.split("/")[0]
        assert all(tag < other for other in logged if other.startswith(group + "/"))


def test_the_depth_axis_is_the_swept_key_that_changes_the_layers_probed():
    def series(key, values, layers):
        runs = [[make_metrics({"model.depth": n}, 0.88)] for n in layers]
        return [figures.Series(f"relu, {key}={v}", "relu", {key: v}, runs=r) for v, r in zip(values, runs)]

    assert figures._depth_key(series("model.blocks", [2, 4], [2, 4])) == "model.blocks"  # a model's own depth
    assert figures._depth_key(series("optimizer.lr", [1e-3, 1e-2], [1, 1])) is None  # numeric, same layers
    assert figures._depth_key(series("model.depth", [1, 3], [1, 3])) == "model.depth"


def test_a_swept_list_valued_key_leaves_the_depth_axis_out_and_the_figure_in(tmp_path):
    runs = [[make_metrics({"model.depth": 2}, 0.88)] for _ in range(2)]
    series = [figures.Series(f"relu, model.channels={c}", "relu", {"model.channels": c}, runs=r) for c, r in zip([[8, 16], [16, 32]], runs)]
    assert figures._depth_key(series) is None
    path, note = figures.probes(series, tmp_path / "probes.png")
    assert path == tmp_path / "probes.png" and note == ""
