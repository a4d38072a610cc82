"""The TensorBoard tags of everything a run logs but the probes (actbench.probes names those, all
under `probes/`), and the names metrics.json gives them.

TensorBoard groups tags by what comes before the first `/`, sorts the groups and opens the first:
so the metric comes first and the split second, `acc/train`, `acc/val`, `acc/test`, then `loss/...`,
then the probes, then `time/` (the epoch, epoch time and samples per second, against the step).
metrics.json and the report keep the split first (`train_loss`, `test_acc`), the names their
readers have always used: `json_name` is the one rule between the two.
"""

from __future__ import annotations

ACC, LOSS = "acc", "loss"
TRAIN, VAL, TEST = "train", "val", "test"
TIME = "time"
EPOCH = f"{TIME}/epoch"  # epochs completed at the step; a bare `epoch` group would sort between acc and loss
EPOCH_S, SAMPLES_PER_S = f"{TIME}/epoch_s", f"{TIME}/samples_per_s"
CURVE_GROUPS = (f"{ACC}/", f"{LOSS}/", f"{TIME}/")  # metrics.json's `curves`; the rest of an epoch's values are probes


def metric_tag(metric: str, split: str) -> str:
    """`loss/train`, `acc/val`, ...: one point per epoch (test: one at the end)."""
    return f"{metric}/{split}"


def step_tag(metric: str) -> str:
    """`loss/train_step`, `acc/train_step`: training means over windows of log_every_n_steps."""
    return f"{metric}/{TRAIN}_step"


# what the HParams tab compares, the report's metric first (it colours the parallel coordinates)
DECLARED_METRICS = (metric_tag(ACC, TEST), metric_tag(ACC, VAL), metric_tag(LOSS, TEST), metric_tag(LOSS, VAL))


def json_name(tag: str) -> str:
    """metrics.json's name for a tag: loss/train -> train_loss, time/epoch_s -> epoch_s."""
    group, _, rest = tag.partition("/")
    if group == TIME:
        return rest
    return f"{rest}_{group}" if rest else group
