"""A run's identity: its name and directory from its overrides, its flat hparams, a hash of what
it computes, and for a pack of seeds one planned run per seed with the .hydra/ an unpacked run
would have.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

PACKS_DIR = ".packs"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def identity_overrides(overrides, exclude) -> list[str]:
    """The overrides that define what a run computes: not the excluded keys, nor keys under them."""
    exclude = set(exclude)
    return [o for o in overrides if not excluded(override_key(o), exclude)]


def excluded(key: str, exclude: set) -> bool:
    """Whether `key` is one of `exclude` or under one of them (`data.root` under `data.root`, `probes.x` under `probes`)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in exclude for i in range(1, len(parts) + 1))


def without_seed(overrides: list[str]) -> list[str]:
    """The overrides minus `seed` and `seeds`: a packed seed's own `seed` replaces them."""
    return [o for o in overrides if override_key(o) not in ("seeds", "seed")]


def run_name(overrides: list[str], seed: int | None = None) -> str:
    """`key=value,...` sorted by key, as Hydra names a job's directory; a packed seed's `seed`
    replaces `seeds=` (and any `seed=`, which a pack ignores)."""
    items = list(overrides) if seed is None else [*without_seed(overrides), f"seed={seed}"]
    items.sort(key=override_key)
    return ",".join(items) or "default"


def job_dirname(task_overrides, exclude) -> str:
    """A job's directory, named by its identity overrides; a pack of seeds goes under .packs/,
    since each of its seeds gets the directory an unpacked run of that seed would have."""
    overrides = identity_overrides(list(task_overrides), list(exclude))
    name = run_name(overrides)
    return f"{PACKS_DIR}/{name}" if any(override_key(o) == "seeds" for o in overrides) else name


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)


def parse_overrides(overrides: list[str]) -> dict:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.value() for o in parsed}


def activation_label(choice: str, overrides: list[str]) -> str:
    """The activation's config name, with any of its keys the command line changed:
    `leaky(negative_slope=0.2)`, `relu(_target_=torch.nn.Softsign)`; so such runs never pass for
    the shipped activation."""
    changed = [o.split("=", 1) for o in overrides if override_key(o).startswith("activation.")]
    if not changed:
        return choice
    args = ",".join(f"{key.split('.', 1)[1]}={value}" for key, value in changed)
    return f"{choice}({args})"


def hparams(cfg: DictConfig, choices, seed: int, overrides: list[str]) -> dict:
    """The flat, fixed set of hyperparameters every run logs, for TensorBoard's HParams tab."""
    lr = cfg.optimizer.get("lr")
    return {
        "activation": activation_label(choices.get("activation"), overrides),
        "seed": seed,
        "lr": float(lr) if lr is not None else "none",
        "batch_size": int(cfg.data.batch_size),
        "depth": int(cfg.model.depth),
        "width": int(cfg.model.width),
        "init": str(cfg.model.init),
        "dropout": float(cfg.model.dropout),
        "optimizer": choices.get("optimizer"),
        "max_epochs": int(cfg.trainer.max_epochs),
        "val_size": int(cfg.data.val_size),
        "experiment": choices.get("experiment") or "none",
    }


def plan_runs(cfg: DictConfig):
    """One `Run` per seed: its directory, name, overrides, hparams, resolved config and config hash."""
    from actbench.record import Run

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    overrides = identity_overrides(hc.overrides.task, hc.job.config.override_dirname.exclude_keys)
    packed = cfg.seeds is not None
    seeds = list(cfg.seeds) if packed else [int(cfg.seed)]
    base = job_dir.parent.parent if job_dir.parent.name == PACKS_DIR else job_dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    common = parse_overrides(without_seed(overrides) if packed else overrides)
    runs = []
    for seed in seeds:
        name = run_name(overrides, seed if packed else None)
        run_dir = base / name if packed else job_dir
        ov = {**common, "seed": seed} if packed else common
        config = {**resolved, "seed": seed, "seeds": None}
        run = Run(name, run_dir, seed, ov, hparams(cfg, hc.runtime.choices, seed, overrides), config)
        run.config_hash = config_hash(config, hc.job.config.override_dirname.exclude_keys)
        runs.append(run)
    return runs


def config_hash(config: dict, exclude) -> str:
    """What a run computes, as a short hash of its resolved config minus the keys that only say
    where or how fast it runs: a finished run is only skipped for the same computation."""
    import hashlib
    import json

    exclude = set(exclude)

    def strip(node, prefix=""):
        if not isinstance(node, dict):
            return node
        return {k: strip(v, f"{prefix}{k}.") for k, v in node.items() if not excluded(prefix + k, exclude)}

    return hashlib.sha1(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_seed_hydra_dirs(runs, job_dir: Path, cfg: DictConfig) -> None:
    """Give each packed seed's run directory the .hydra/ an unpacked run would have."""
    import yaml

    src = job_dir / ".hydra"
    for run in runs:
        dst = run.dir / ".hydra"
        dst.mkdir(parents=True, exist_ok=True)
        seed_cfg = OmegaConf.merge(cfg, {"seed": run.seed, "seeds": None})
        (dst / "config.yaml").write_text(OmegaConf.to_yaml(seed_cfg))
        overrides = yaml.safe_load((src / "overrides.yaml").read_text()) if (src / "overrides.yaml").exists() else []
        overrides = [*without_seed(overrides), f"seed={run.seed}"]
        (dst / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if (src / "hydra.yaml").exists():
            (dst / "hydra.yaml").write_text((src / "hydra.yaml").read_text())

