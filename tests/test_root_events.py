"""actbench.root_events: the sweep directory's own events files, read back through TensorBoard's
backend: the report's figures as images, each kind of file replaced whole by its next version."""

from __future__ import annotations

import pytest

from actbench import hparams_tab, root_events
from conftest import events, write_run


def png(tmp_path, name: str, width: int, height: int) -> bytes:
    """A real PNG of this size, as the report's figures are written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    fig.savefig(tmp_path / name, dpi=100)
    plt.close(fig)
    return (tmp_path / name).read_bytes()


def test_figures_are_images_of_the_root_run_as_they_were_drawn(tmp_path):
    a, b = png(tmp_path, "a.png", 320, 120), png(tmp_path, "b.png", 200, 150)
    path = root_events.write_figures(tmp_path, [("acc/_report", tmp_path / "a.png"), ("loss/_report", tmp_path / "b.png")])
    assert path.parent == tmp_path and path.name.endswith(root_events.FIGURES_SUFFIX)
    ea = events(tmp_path)
    assert sorted(ea.Tags()["images"]) == ["acc/_report", "loss/_report"]
    (image,) = ea.Images("acc/_report")
    assert (image.width, image.height, image.encoded_image_string) == (320, 120, a)
    assert ea.Images("loss/_report")[0].encoded_image_string == b


def test_a_rewrite_replaces_the_figures_and_leaves_the_experiment(tmp_path):
    write_run(tmp_path, {"activation": "relu", "seed": 0})
    experiment = hparams_tab.write_experiment(tmp_path)
    png(tmp_path, "a.png", 100, 100)
    first = root_events.write_figures(tmp_path, [("acc/_report", tmp_path / "a.png")])
    png(tmp_path, "a.png", 300, 100)
    second = root_events.write_figures(tmp_path, [("acc/_report", tmp_path / "a.png")])
    assert not first.exists() and sorted(tmp_path.glob("*tfevents*")) == sorted([experiment, second])
    assert [i.width for i in events(tmp_path).Images("acc/_report")] == [300]  # one version, the new one
    assert hparams_tab.write_experiment(tmp_path).exists() and second.exists()  # and the other way round
    assert root_events.write_figures(tmp_path, []) is None and not second.exists()  # none drawn: none shown
    assert not list(tmp_path.glob("*.tmp"))


def test_a_file_that_is_not_a_png_is_refused(tmp_path):
    (tmp_path / "x.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="not a PNG"):
        root_events.write_figures(tmp_path, [("acc/_report", tmp_path / "x.png")])
    assert not list(tmp_path.glob("*tfevents*"))
