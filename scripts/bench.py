#!/usr/bin/env python
"""Speed benchmark: actbench against a plain PyTorch loop doing the same work, in one run.

    python scripts/bench.py                 # CPU
    python scripts/bench.py --device cuda   # GPU (CUDA-graph step on by default there)
    python scripts/bench.py --packed 5      # also: 5 seeds packed, and vs the same 5 seeds run one after another
    python scripts/bench.py --sweep         # whole sweeps as users type them, packed (the default) vs pack=false, 3 times each

The blog's configuration: MLP 784-128-10, ReLU, Adam(lr=1e-3), batch 32, Fashion-MNIST
(synthetic data of the same shape when the real files are absent); `--model cnn` the ConvNet
(conf/model/cnn.yaml) in the same setting; `--model gpt` the GPT on the text (data=shakespeare_char).

Same work, so the ratio is honest: the reference trains the same model from the same initial
weights, on the same 55,000 training images in the same per-epoch order (each seed's order from
actbench.data), with the same optimizer maths (Adam, fused where available, denormals
flushed), including the last partial batch. It does no validation, logging, probes or
checkpoints: what actbench costs on top of that is what the ratios show. The first steps'
losses of both are compared, and the benchmark fails if they disagree.

Epoch times are medians over the epochs after each run's warm-up epoch, over rounds that
interleave the variants (--packed's run too); actbench's are measured from one epoch end to the
next, so they include validation, probes, logging and the checkpoint. Both use --threads CPU threads (one
by default: this model's operations are too small to split between cores).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actbench.data import idx as ab_data  # noqa: E402
from actbench.data import memory  # noqa: E402
from actbench.conf import CONF_DIR, locate, option  # noqa: E402
from actbench.model import PlainModel, param_groups  # noqa: E402
from actbench.results import TEST_ACC, VAL_LOSS, load_runs  # noqa: E402

MODELS = sorted(f.stem for f in (CONF_DIR / "model").glob("*.yaml"))  # each with its settings in conf/model/
REAL_DIRS = option("data", "fashion_mnist")["system_dirs"]
CLI_EPOCHS = 5  # the packed-vs-sequential command lines run the blog's 5 epochs, start-up included
SWEEPS = {  # as users type them; each is timed from the command to its report
    "the design card's": ["-m", "activation=relu,gelu,sigmoid,leaky"],
    "the blog's (make sweep)": ["-m", "experiment=blog"],
}


# ---------------------------------------------------------------- data


def bench_data(tmp: Path, root: str) -> tuple[list[str], dict]:
    """Overrides pointing actbench at the real data, or at synthetic files of the same shape."""
    try:
        arrays = ab_data.load_arrays(root, REAL_DIRS, cache_dir=tmp / "cache")
        overrides = [f"data.root={Path(root).resolve()}", f"data.system_dirs={REAL_DIRS}", f"data.cache_dir={tmp / 'cache'}"]
        return overrides, arrays | {"kind": "real Fashion-MNIST"}
    except ab_data.DataError:
        pass
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 60000).astype(np.uint8),
        "test_x": rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 10000).astype(np.uint8),
    }
    folder = tmp / "synthetic"
    folder.mkdir()
    for key, stem in (("train_x", "train-images"), ("train_y", "train-labels"), ("test_x", "t10k-images"), ("test_y", "t10k-labels")):
        a = arrays[key]
        (folder / f"{stem}-idx{a.ndim}-ubyte").write_bytes(ab_data.idx_header(a) + a.tobytes())
    overrides = [f"data.root={folder}", "data.system_dirs=[]", "data.verify_checksum=false", f"data.cache_dir={tmp / 'cache'}"]
    return overrides, arrays | {"kind": "synthetic (real data not found)"}


TEXT_WINDOWS = 4096  # --model gpt: training windows of 64 characters per epoch (128 steps of 32)
TEXT_KEYS = {"windows_per_epoch": TEXT_WINDOWS, "block_size": 64}


def text_bench_data(tmp: Path) -> tuple[list[str], dict]:
    """--model gpt: the text a run would find (the plays, fetched by `python -m actbench.data
    data=shakespeare_char`), else a synthetic text of the same alphabet; and the overrides for it."""
    from actbench.data.text import ShakespeareChar
    from actbench.errors import DataError

    from omegaconf import OmegaConf

    root = tmp / "text"
    found: list[str] = []  # the cache a run reads by default
    try:
        data = ShakespeareChar([0], root=str(root), cache_dir=OmegaConf.load(CONF_DIR / "data" / "shakespeare_char.yaml").cache_dir,
                               **TEXT_KEYS)
        data.prepare()
        kind = data.source.split(":")[0]
    except DataError:
        rng = np.random.default_rng(0)
        root.mkdir()
        (root / "input.txt").write_text("".join(rng.choice(list("abcdefghij klmnop\n"), 1_000_000)))
        found = [f"data.cache_dir={tmp / 'cache'}"]
        data = ShakespeareChar([0], root=str(root), cache_dir=None, **TEXT_KEYS)
        data.prepare()
        kind = "a synthetic text (the plays not fetched)"
    overrides = ["data=shakespeare_char", f"data.root={root}", *found, *(f"data.{k}={v}" for k, v in TEXT_KEYS.items())]
    return overrides, {"kind": kind, "text": data}



# ---------------------------------------------------------------- the reference


def reference_model(seed: int, device, model: str = "mlp", shape=(ab_data.INPUT_SHAPE, ab_data.N_CLASSES)) -> nn.Module:
    """torch's own layers (nn.Linear, nn.Conv2d, ...) holding exactly actbench's initial weights for this seed."""
    settings = option("model", model)
    cls = locate(settings.pop("_target_"), "model._target_")
    return PlainModel(cls, None).pack(settings, [seed], [nn.ReLU], *shape).member(0).to(device)


def plain_loop(net, order, loss_of, epochs: int, device, batch_size: int, lr: float):
    """The reference's epochs: each epoch's order (`order(epoch)`) cut into batches, one step of Adam
    (fused, grouped as actbench groups) on `loss_of(batch)` each; per-epoch times and the first
    epoch's per-step losses."""
    opt = torch.optim.Adam(param_groups(net.parameters(), fused=True), lr=lr, fused=True)
    times, first_losses = [], []
    for epoch in range(epochs):
        epoch_order = order(epoch)
        sync(device)
        t = time.perf_counter()
        losses = []
        for start in range(0, len(epoch_order), batch_size):
            loss = loss_of(epoch_order[start : start + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch == 0:
                losses.append(loss.detach())
        sync(device)
        times.append(time.perf_counter() - t)
        if epoch == 0:
            first_losses = torch.stack(losses).cpu()
    return times, first_losses


def reference_run(arrays, seed: int, epochs: int, device, batch_size=32, lr=1e-3, val_size=5000, model="mlp", channels_last=False):
    """The plain loop on images: per-epoch times and the first epoch's per-step losses."""
    x = ab_data.to_float(arrays["train_x"], "scale").to(device)
    y = torch.from_numpy(arrays["train_y"].astype(np.int64)).to(device)
    train_idx = memory.split_indices(len(x), val_size, seed)[0][None].to(device)
    batches = memory.TrainBatches(x, y, train_idx, [seed], batch_size, 1, lambda: 0)
    net = reference_model(seed, device, model)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    return plain_loop(net, lambda e: batches.order(e)[0], lambda idx: F.cross_entropy(net(x[idx]), y[idx]), epochs, device, batch_size, lr)


def reference_lm_run(data, seed: int, epochs: int, device, batch_size=32, lr=1e-3):
    """The plain loop of the language model: the same windows in the same order, the same step."""
    from actbench.data.text import Windows

    ids, offsets, starts = data.ids.to(device), data.offsets.to(device), data.train_starts.to(device)
    windows = Windows(ids, offsets, starts[None], [seed], batch_size, 1, lambda: 0, windows=data.windows)
    net = reference_model(seed, device, "gpt", ((data.block_size,), len(data.vocab)))

    def loss_of(batch):
        w = ids[batch[:, None] + offsets].long()
        logits = net(w[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))

    return plain_loop(net, lambda e: windows.order(e)[0], loss_of, epochs, device, batch_size, lr)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- actbench in this process


class EpochClock(Callback):
    """Wall time from one epoch end to the next, after every other callback (the checkpoint too)."""

    def __init__(self):
        self.marks, self.first_losses = [], None

    def on_train_epoch_start(self, trainer, pl_module):
        if not self.marks:
            sync(pl_module.device)
            self.marks.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.marks.append(time.perf_counter())
        if self.first_losses is None:
            self.first_losses = pl_module.train_epoch_steps()["loss"][:, 0].cpu()

    @property
    def times(self):
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


CLOCK: EpochClock | None = None


def clock() -> EpochClock:
    """The Hydra `_target_` that hands the benchmark's clock to the Trainer."""
    global CLOCK
    CLOCK = EpochClock()
    return CLOCK


def actbench_run(overrides: list[str], out_dir: Path) -> EpochClock:
    """One actbench run in this process, exactly as `python -m actbench.train` would run it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from actbench import train

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"out_dir={out_dir}", f"+callbacks.clock._target_={__name__}.clock"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir / "run")
    HydraConfig.instance().set_config(cfg)
    train.run(cfg)
    return CLOCK


# ---------------------------------------------------------------- start-up and packing (separate processes)


def startup_seconds(overrides: list[str], out_dir: Path) -> float:
    """From launching `python -m actbench.train` to its first training step."""
    t = time.time()
    subprocess.run(
        [sys.executable, "-m", "actbench.train", *overrides, f"out_dir={out_dir}", "trainer.max_epochs=1", "probes=none"],
        cwd=ROOT, check=True, capture_output=True,
    )
    metrics = json.loads(next(out_dir.rglob("metrics.json")).read_text())
    return metrics["timing"]["first_step_at"] - t


def sweep_table(data_overrides: list[str], accel: str, tmp: Path, extra: list[str], repeats: int = 1) -> None:
    """Each sweep of SWEEPS from the command line to its report, packed and with pack=false, back to
    back, `repeats` times in alternating order (packed first, then pack=false first, ...), so that a
    slow spell of a shared machine falls on both; the ratio is of the medians."""
    print(f"\n{'sweep, from the command to its report':62s} {'packed':>9s} {'pack=false':>11s} {'ratio':>7s}")
    for i, (label, args) in enumerate(SWEEPS.items()):
        name = f"sweep{i}"  # both commands write the same run names under it: each member meets its twin
        base = [sys.executable, "-m", "actbench.train", *args, *data_overrides, accel, *extra, f"name={name}"]
        times: dict[str, list[float]] = {"packed": [], "apart": []}
        for r in range(repeats):
            order = ["packed", "apart"] if r % 2 == 0 else ["apart", "packed"]
            for kind in order:
                out = tmp / f"sweep-{kind}-{r}"
                times[kind].append(timed([*base, *(["pack=false"] if kind == "apart" else []), f"out_dir={out}"]))
        packed, apart = median(times["packed"]), median(times["apart"])
        command = f"{label} {' '.join(args)}"
        print(f"{command:62s} {packed:8.1f}s {apart:10.1f}s {packed / apart:6.2f}x", flush=True)
        if repeats > 1:
            print(f"{'':4s}each time: packed {' '.join(f'{t:.1f}' for t in times['packed'])} s; "
                  f"pack=false {' '.join(f'{t:.1f}' for t in times['apart'])} s (medians above)", flush=True)
        same_science(tmp / "sweep-packed-0" / name, tmp / "sweep-apart-0" / name)


def same_science(packed_dir: Path, apart_dir: Path) -> None:
    """Packing changes how fast, not what: each packed member against its pack=false twin, bit for bit."""
    twins = {r.name: r for r in load_runs(apart_dir)}
    packed = {r.name: r for r in load_runs(packed_dir)}
    worst = {TEST_ACC: 0.0, VAL_LOSS: 0.0}
    # a run on one side only, or without a finite value, is a difference too (NaN compares as no maximum)
    unmatched = sorted(set(packed) ^ set(twins))
    for name in set(packed) & set(twins):
        for metric in worst:
            gap = abs(packed[name].value(metric) - twins[name].value(metric))
            worst[metric] = max(worst[metric], gap) if math.isfinite(gap) else math.inf
    ok = not unmatched and worst[TEST_ACC] == 0 and worst[VAL_LOSS] == 0  # bit for bit
    print(f"{'':4s}{len(twins)} runs vs their pack=false twins: max |test acc difference| {worst[TEST_ACC]:.1e}, "
          f"max |val loss difference| {worst[VAL_LOSS]:.1e}"
          + (f", without a twin: {', '.join(unmatched)}" if unmatched else "") + f" -> {'agree' if ok else 'DIFFER'}", flush=True)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


# ---------------------------------------------------------------- main


def peak_memory(device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        return f"{rss:.0f} MiB host, {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU"
    return f"{rss:.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run; the first of each run is a warm-up")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every variant, interleaved")
    ap.add_argument("--model", default="mlp", choices=MODELS, help="a file of conf/model/: the blog's MLP, the ConvNet (cnn), ...")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for the reference and actbench (threads=); default: what threads=auto picks (1 for the MLP)")
    ap.add_argument("--packed", type=int, default=0, help="also compare K packed seeds with K sequential runs")
    ap.add_argument("--override", action="append", default=[],
                    help="an extra actbench override for every actbench run (repeatable); only one that keeps the "
                         "reference's work (probes, logging, eval batch size...): the reference stays the blog's model")
    ap.add_argument("--data-root", default="data", help="where to look for Fashion-MNIST first (then Debian's folder)")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-sequential", action="store_true", help="with --packed: skip the wall-clock comparison with sequential runs")
    ap.add_argument("--sweep", action="store_true", help="only time whole sweeps from the command line, packed vs pack=false")
    ap.add_argument("--repeats", type=int, default=3, help="with --sweep: times each sweep is timed both ways, alternating")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.set_flush_denormal(True)
    if args.threads is None:  # what threads=auto decides for one run of this model
        from hydra import compose, initialize_config_dir

        from actbench.placement import cpu_threads

        with initialize_config_dir(str(CONF_DIR), version_base=None):
            data = ["data=shakespeare_char"] if args.model == "gpt" else []
            args.threads = cpu_threads(compose("train", overrides=[f"model={args.model}", *data]), 1)
    torch.set_num_threads(args.threads)
    from actbench.placement import keep_freed_memory, undo_nvml_check

    undo_nvml_check()  # importing Lightning slowed every Adam step of the reference too
    keep_freed_memory()  # as actbench does: the reference gets the same allocator
    with tempfile.TemporaryDirectory(prefix="actbench-bench-") as tmp:
        return measure(args, device, Path(tmp))


def measure(args, device, tmp: Path) -> int:
    """Every variant, timed, with its table printed; 0 if the reference and actbench agree."""
    data_overrides, arrays = text_bench_data(tmp) if args.model == "gpt" else bench_data(tmp, args.data_root)
    accel = "trainer.accelerator=gpu" if device.type == "cuda" else "trainer.accelerator=cpu"
    if args.sweep:
        print(f"actbench sweep benchmark: {arrays['kind']}; device {device}")
        sweep_table(data_overrides, accel, tmp, args.override, args.repeats)
        return 0
    common = [*data_overrides, accel, f"trainer.max_epochs={args.epochs}", "activation=relu", "seed=0", "report=none",
              f"threads={args.threads}", f"model={args.model}", *args.override]
    what = {"mlp": "MLP 784-128-10", "cnn": "ConvNet (conv 16, conv 32, dense 128; channels-last)",
            "vit": "ViT (7x7 patches, dim 64, 4 blocks, 4 heads, feed-forward 128)",
            "gpt": f"GPT (4 blocks of 128, 4 heads, context 64; {TEXT_WINDOWS} windows per epoch)"}.get(args.model, f"model={args.model}")
    print(f"actbench benchmark: {what}, ReLU, Adam, batch 32, {arrays['kind']}; device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}")

    variants = [("actbench, probes off", ["probes=none"]), ("actbench, default logging + probes", [])]
    if device.type == "cuda":
        variants.append(("actbench, probes off, eager (no CUDA graph)", ["probes=none", "cuda_graph=false"]))
    # Rounds interleave the variants, so a slow spell of a shared machine does not land on one of them.
    times: dict[str, list[float]] = {"plain PyTorch loop (reference)": []}
    memory: dict[str, str] = {}
    first_losses = ref_losses = None
    packed_seeds = ",".join(map(str, range(args.packed)))
    packed_times: list[float] = []
    packed_threads = None  # what threads=auto picked for the pack
    for r in range(args.rounds):
        if args.model == "gpt":
            ref_t, losses = reference_lm_run(arrays["text"], 0, args.epochs, device)
        else:
            ref_t, losses = reference_run(arrays, 0, args.epochs, device, model=args.model, channels_last=args.model == "cnn")
        ref_losses = losses if ref_losses is None else ref_losses
        times["plain PyTorch loop (reference)"] += ref_t[1:]
        # the peak so far, read in the first round, before any packed run has raised it
        memory.setdefault("plain PyTorch loop (reference)", peak_memory(device))
        for i, (label, extra) in enumerate(variants):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            c = actbench_run([*common, *extra, f"name=v{i}r{r}"], tmp / f"v{i}r{r}")
            first_losses = c.first_losses if first_losses is None else first_losses
            times.setdefault(label, []).extend(c.times[1:])
            memory.setdefault(label, peak_memory(device))
        if args.packed:  # in the same rounds, so that its ratio to the lone run compares the same spells
            c = actbench_run([*common, "probes=none", f"seeds=[{packed_seeds}]", f"name=packed{r}", "threads=auto"], tmp / f"packed{r}")
            packed_times += c.times[1:]
            packed_threads = torch.get_num_threads()
            torch.set_num_threads(args.threads)  # the packed run chose its own; the reference must not inherit them
    rows = [(label, t, memory[label]) for label, t in times.items()]

    n = min(50, len(ref_losses), len(first_losses))
    diff = (ref_losses[:n] - first_losses[:n]).abs().max().item()
    same = torch.allclose(ref_losses[:n], first_losses[:n], rtol=1e-4, atol=1e-5)

    ref = median(times["plain PyTorch loop (reference)"])
    print(f"\n{'':44s} {'s/epoch':>9s} {'ratio':>7s}   {'peak memory (process so far)':30s} epochs timed")
    for label, t, mem in rows:
        s = median(t)
        print(f"{label:44s} {s:9.3f} {s / ref:6.2f}x   {mem:30s} {' '.join(f'{x:.2f}' for x in t)}")
    print(f"\nfirst {n} steps' losses, reference vs actbench: max |difference| {diff:.2e} -> {'agree' if same else 'DISAGREE'}")

    if not args.skip_startup:
        s = startup_seconds(data_overrides + [accel, f"model={args.model}"], tmp / "startup")
        print(f"start-up, `python -m actbench.train` to its first training step: {s:.2f} s")

    if args.packed:
        k, seeds = args.packed, packed_seeds
        s = median(packed_times)
        lone = median(times["actbench, probes off"])
        print(f"\n{k} seeds packed, probes off, threads=auto ({packed_threads}): {s:.3f} s/epoch, "
              f"{s / k:.4f} s/epoch/seed ({s / k / lone:.3f}x actbench's lone run, {s / k / ref:.3f}x the reference's one seed); "
              f"epochs timed {' '.join(f'{x:.2f}' for x in packed_times)}")
        if not args.skip_sequential:
            base = [*data_overrides, accel, "probes=none", "report=none", f"trainer.max_epochs={CLI_EPOCHS}", *args.override]
            packed = timed([sys.executable, "-m", "actbench.train", *base, f"seeds=[{seeds}]", f"out_dir={tmp / 'packed-cli'}"])
            sequential = timed([sys.executable, "-m", "actbench.train", "-m", *base, f"seed={seeds}", f"out_dir={tmp / 'sequential'}"])
            print(f"{k} seeds x {CLI_EPOCHS} epochs from the command line, start-up included: packed {packed:.1f} s, "
                  f"one after another (one multirun) {sequential:.1f} s -> {packed / sequential:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
