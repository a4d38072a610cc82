"""The TensorBoard tags of everything a run logs, the probes' included, and the names metrics.json
gives them. Writers (actbench.record, actbench.probes) and readers (actbench.results, the report's
figures) take every name from here, and readers need no torch or Lightning to know them.

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


# ---------------------------------------------------------------- the probes' tags (actbench.probes)

# All start with PREFIX, so the probes make one group below acc/ and loss/. metrics.json's `probes`
# section uses the same names; older files have them without the prefix (actbench.results reads both).
PROBES = "probes"
PREFIX = f"{PROBES}/"
DEAD, SATURATED, DACT_MEAN = "dead", "saturated", "dact_mean"  # per hidden layer, see layer_tag
PREACT, ACT = "preact", "act"  # histograms per hidden layer, TensorBoard only
ACT_PARAM = "act"  # a learnable activation's values per hidden layer: act_{parameter}[_{mean,min,max}], see layer_tag
GRAD_NORM, GRAD_NORM_STEP = "grad_norm", "grad_norm_step"  # per weight matrix, see grad_norm_tag; _step: every sample, TensorBoard only
GRAD_RATIO, GRAD_RATIO_STEP = f"{PREFIX}grad_ratio", f"{PREFIX}grad_ratio_step"  # first over last


def layer_tag(stat: str, i: int) -> str:
    """`probes/dead/layer{i}` and the like, for the i-th hidden activation a model records (from 1)."""
    return f"{PREFIX}{stat}/layer{i}"


def grad_norm_tag(j: int, kind: str = GRAD_NORM) -> str:
    """`probes/grad_norm/w{j}` (or `probes/grad_norm_step/w{j}`), for the j-th of the model's
    `probe_weights()` (from 1; the output layer's is the last)."""
    return f"{PREFIX}{kind}/w{j}"


# ---------------------------------------------------------------- the report's figures (actbench.root_events)

REPORT = "_report"  # "_" sorts before every lower-case letter: a group's report figure is its first card


def report_tag(metric: str, what: str = "") -> str:
    """A report figure's tag, as an image of the sweep directory's own run, in the group of the
    metrics.json name it shows (test_acc -> `acc/_report`, with `what`: `acc/_report_p_better`)."""
    group = metric.rpartition("_")[2] if metric.rpartition("_")[2] in (ACC, LOSS) else metric
    return f"{group}/{REPORT}" + (f"_{what}" if what else "")
