"""Checks on the composed config, before anything is built: one line per problem, naming the key.
The model's own keys are checked by its constructor (`PlainModel.check`)."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from actbench.conf import CONF_DIR
from actbench.errors import ConfigError
from actbench.ownership import MODES
from actbench.results import METRICS as REPORT_METRICS
from actbench.schedule import DECAYS


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    """A finite number: a learning rate of 1e999 is no setting, and would only end as a diverged run."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def no_such(group: str, value, valid) -> ConfigError:
    """The error for a choice of a config group that names no file of it (`activation=relux`)."""
    return ConfigError(f"{group}={value!r}: no such {group}; valid: {', '.join(sorted(valid))}")


def _config_dirs(argv: list[str]) -> list[Path] | None:
    """conf/ and the folders a command adds to Hydra's search path (--config-dir, and
    hydra.searchpath's file:// entries); None when it adds one of another kind."""
    dirs = [CONF_DIR]
    for i, arg in enumerate(argv):
        if arg.startswith(("--config-path", "-cp", "--config-name", "-cn")):
            return None  # another primary config: its own defaults and search path
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.partition("=")[2]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            for entry in arg.partition("=")[2].strip("[]").split(","):
                if not entry.strip().startswith("file://"):
                    return None
                dirs.append(Path(entry.strip().removeprefix("file://")))
    return dirs


def check_choices(argv: list[str]) -> None:
    """Each config-group choice typed on the command line (`activation=relux`, `model=cnn,mlp`)
    names a file of its group: one line if not, before Hydra would answer with a page of its own.
    Choices Hydra's grammar computes (`choice(...)`, globs) and Hydra's own groups are left to Hydra."""
    dirs = _config_dirs(argv)
    if dirs is None:
        return
    for arg in argv:
        group, eq, value = arg.lstrip("+").partition("=")
        if not eq or not group.isidentifier() or any(c in value for c in "()[]{}*$'\""):
            continue  # a value, not a choice; Hydra's own groups (hydra/launcher=...) have options in its plugins
        valid = {str(f.relative_to(d / group).with_suffix("")) for d in dirs for f in (d / group).rglob("*.yaml")}
        if not valid and not (CONF_DIR / group).is_dir():
            continue  # not a config group
        for choice in filter(None, (v.strip() for v in value.split(","))):
            if choice not in valid and choice != "null":
                raise no_such(group, choice, valid)


POSITIVE_INT = (lambda v: is_int(v) and v >= 1, "an integer >= 1")  # the rule of a count or size

# key -> (test, what it must be)
RULES = {
    "seed": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "optimizer.lr": (lambda v: is_num(v) and v > 0, "a number > 0"),
    "data.batch_size": POSITIVE_INT,
    "data.eval_batch_size": (lambda v: v == "auto" or (is_int(v) and v >= 1), "auto or an integer >= 1"),
    "data.val_size": POSITIVE_INT,
    "data.probe_size": POSITIVE_INT,
    "data.normalize": (lambda v: v in ("scale", "standardize"), "scale or standardize"),
    "data.download": (lambda v: isinstance(v, bool), "true or false"),
    "optimizer.schedule.warmup": (lambda v: is_num(v) and v >= 0 and (v < 1 or float(v).is_integer()),
                                  "a number of steps (an integer >= 0) or a share of all steps in [0, 1)"),
    "optimizer.schedule.decay": (lambda v: v in DECAYS, " or ".join(DECAYS)),
    "optimizer.schedule.min_lr": (lambda v: is_num(v) and 0 <= v <= 1, "a share of the rate in [0, 1]"),
    "trainer.clip_norm": (lambda v: v is None or (is_num(v) and v > 0), "null or a number > 0"),
    "trainer.max_epochs": POSITIVE_INT,
    "trainer.log_every_n_steps": POSITIVE_INT,
    "steps_per_execution": POSITIVE_INT,
    "cuda_graph": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "probes.activations.dead_tol": (lambda v: is_num(v) and v >= 0, "a number >= 0"),
    "probes.activations.saturation_tol": (lambda v: is_num(v) and v >= 0, "a number >= 0"),
    "probes.gradients.every_n_steps": POSITIVE_INT,
    "diverged_loss": (lambda v: is_num(v) and v > 0, "a number > 0"),
    "max_pack": (lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
    "threads": (lambda v: v == "auto" or (is_int(v) and v >= 1), "auto or an integer >= 1"),
    "ownership.mode": (lambda v: v in MODES, f"{', '.join(MODES[:-1])} or {MODES[-1]}"),
    "ownership.lease_s": (lambda v: is_num(v) and v > 0, "a number of seconds > 0"),
    "ownership.renew_s": (lambda v: v is None, "left out: it was removed (a lease is refreshed every lease_s / 5)"),
    # the report's settings, checked before training rather than after the sweep
    "report.metric": (lambda v: v == "auto" or v in REPORT_METRICS, f"auto or one of {', '.join(REPORT_METRICS)}"),
    "report.effect": (lambda v: v is None or (is_num(v) and v > 0), "null or a number > 0"),
    "report.alpha": (lambda v: is_num(v) and 0 < v < 1, "a number in (0, 1)"),
    "report.power": (lambda v: is_num(v) and 0 < v < 1, "a number in (0, 1)"),
    "report.pairs": (lambda v: isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()),
                     "a map of activation to its twin, e.g. {reglu: relu}"),
}


def validate(cfg: DictConfig) -> None:
    from actbench.model import model_class

    absent = object()
    model = model_class(cfg) if cfg.get("model") is not None else None
    own = model.RULES if model is not None else {}
    for key, (ok, what) in {**RULES, **{f"model.{k}": rule for k, rule in own.items()}}.items():
        value = OmegaConf.select(cfg, key, default=absent)  # a probe switched off (null) leaves its keys absent
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if value is not absent and not ok(value):  # an absent knob: e.g. a user's own trainer preset
            raise ConfigError(f"{key}={value!r}: must be {what}")
    if model is not None:
        from hydra.utils import get_class

        data = get_class(cfg.data._target_)
        model.check(*data.shape(cfg.data))
    alpha, power = (OmegaConf.select(cfg, f"report.{k}") for k in ("alpha", "power"))
    if alpha is not None and power is not None and not alpha < power:
        raise ConfigError(f"report.power={power!r}: must be more than report.alpha={alpha!r}")
    seeds = cfg.get("seeds")
    if seeds is not None:
        seeds = OmegaConf.to_object(seeds) if OmegaConf.is_config(seeds) else seeds
        if not isinstance(seeds, list) or not seeds or not all(is_int(s) and s >= 0 for s in seeds):
            raise ConfigError(f"seeds={seeds!r}: must be null or a non-empty list of integers >= 0, e.g. seeds=[0,1,2]")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds={seeds!r}: each seed may appear once")
