"""A run's identity: its name and directory from its overrides, its flat hparams and a hash of
what it computes; what is left of it to train (`pending`, read from its files once it is owned);
and for a packed job (`members=...` from the packing sweeper, or `seeds=[...]`)
one planned run per member, composed by Hydra from the member's own overrides exactly as an
unpacked job of it would be, with the .hydra/ such a job would have.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from actbench.errors import UserError
from actbench.logs import say
from actbench.packing import MEMBERS_KEY, SEEDS_KEY, override_key

PACKS_DIR = ".packs"


def identity_overrides(overrides, exclude) -> list[str]:
    """The overrides that define what a run computes: not the excluded keys, nor keys under them."""
    exclude = set(exclude)
    return [o for o in overrides if not excluded(override_key(o), exclude)]


def excluded(key: str, exclude: set) -> bool:
    """Whether `key` is one of `exclude` or under one of them (`data.root` under `data.root`, `probes.x` under `probes`)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in exclude for i in range(1, len(parts) + 1))


def run_name(overrides: list[str]) -> str:
    """`key=value,...` sorted by key, as Hydra names a job's directory."""
    return ",".join(sorted(overrides, key=override_key)) or "default"


def job_dirname(task_overrides, exclude) -> str:
    """A job's directory, named by its identity overrides; a packed job goes under .packs/,
    since each of its members gets the directory an unpacked run of it would have."""
    task = list(task_overrides)
    packed = [o for o in task if override_key(o) in (MEMBERS_KEY, SEEDS_KEY)]
    name = run_name(identity_overrides([o for o in task if o not in packed], list(exclude)))
    if not packed:
        return name
    return f"{PACKS_DIR}/{name}+{hashlib.sha1('|'.join(packed).encode()).hexdigest()[:8]}"


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
    """The flat, fixed set of hyperparameters every run logs, for TensorBoard's HParams tab: the
    run's own, then the model's (its config keys, its parameter count and forward FLOPs per
    example, found from it)."""
    from actbench.model import model_class

    lr = cfg.optimizer.get("lr")
    model = model_class(cfg)
    return {
        "activation": activation_label(choices.get("activation"), overrides),
        "seed": seed,
        "lr": float(lr) if lr is not None else "none",
        "batch_size": int(cfg.data.batch_size),
        **model.hparams(cfg.model),
        **dict(zip(MEASURED_HPARAMS, model.size())),
        "optimizer": choices.get("optimizer"),
        "data": choices.get("data") or "none",
        "max_epochs": int(cfg.trainer.max_epochs),
        "val_size": int(cfg.data.val_size if "val_size" in cfg.data else cfg.data.eval_windows),  # a text's: its windows
        "experiment": choices.get("experiment") or "none",
    }


MEASURED_HPARAMS = ("params", "flops")  # entries of `hparams` found from the model, of no config key

def member_overrides(cfg: DictConfig, task: list[str]) -> list[list[str]] | None:
    """Each packed member's whole override list, as an unpacked job of it would have; None for a
    job that is one run."""
    common = [o for o in task if override_key(o) not in (MEMBERS_KEY, SEEDS_KEY, "seed")]
    if cfg.get(MEMBERS_KEY):
        return [[*(o for o in common if o not in own), *own] for own in (list(m) for m in cfg[MEMBERS_KEY])]
    if cfg.seeds is not None:
        return [[*common, f"seed={s}"] for s in cfg.seeds]
    return None


class Composer:
    """Member configs, composed by Hydra as the launcher composes an unpacked job's; members that
    differ from the job only in their seed get the job's config with that seed."""

    def __init__(self, cfg: DictConfig, hc):
        self.cfg, self.hc = cfg, hc
        self.job_rest = sorted(o for o in hc.overrides.task if override_key(o) not in (MEMBERS_KEY, SEEDS_KEY, "seed"))
        self._composed: dict[tuple, tuple[DictConfig, dict]] = {}

    def __call__(self, overrides: list[str]) -> tuple[DictConfig, dict]:
        """(the member's config, its config-group choices)."""
        rest = tuple(sorted(o for o in overrides if override_key(o) != "seed"))
        seed = next((parse_overrides([o])["seed"] for o in overrides if override_key(o) == "seed"), None)
        if list(rest) == self.job_rest:
            base, choices = self.cfg, dict(self.hc.runtime.choices)
        else:
            if rest not in self._composed:
                self._composed[rest] = self._compose(list(rest))
            base, choices = self._composed[rest]
        member = copy.deepcopy(base)  # a deep copy: interpolations resolve against the member's own root
        with open_dict(member):
            member.seeds, member[MEMBERS_KEY] = None, None
            if seed is not None:
                member.seed = seed
        return member, choices

    def _compose(self, overrides: list[str]) -> tuple[DictConfig, dict]:
        from hydra.core.global_hydra import GlobalHydra

        master = OmegaConf.create({"hydra": {"overrides": {"hydra": list(self.hc.overrides.hydra)}, "job": {"config_name": self.hc.job.config_name}}})
        composed = GlobalHydra.instance().config_loader().load_sweep_config(master, overrides)
        choices = OmegaConf.to_container(composed.hydra.runtime.choices)
        with open_dict(composed):
            del composed["hydra"]
        return composed, choices


def plan_runs(cfg: DictConfig):
    """One `RunRecord` per member (one for a plain job): its directory, name, overrides, hparams,
    composed config and config hash."""
    from actbench.record import RunRecord

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    exclude = list(hc.job.config.override_dirname.exclude_keys)
    task = list(hc.overrides.task)
    members = member_overrides(cfg, task)
    packed = members is not None
    base = job_dir.parent.parent if job_dir.parent.name == PACKS_DIR else job_dir
    compose = Composer(cfg, hc) if packed else None
    runs = []
    for overrides in members or [task]:
        member_cfg, choices = compose(overrides) if packed else (cfg, dict(hc.runtime.choices))
        identity = identity_overrides(overrides, exclude)
        name = run_name(identity)
        config = OmegaConf.to_container(member_cfg, resolve=True)
        run = RunRecord(name, base / name if packed else job_dir, int(member_cfg.seed), parse_overrides(identity),
                  hparams(member_cfg, choices, int(member_cfg.seed), identity), config, cfg=member_cfg, task_overrides=overrides,
                  choices=choices)
        run.config_hash = config_hash(config, exclude)
        runs.append(run)
    return runs


# A model rewritten in plain PyTorch that computes the bits of its hand-packed predecessor keeps the
# predecessor's name in a run's identity, so that sweeps made before it still skip their finished runs.
PREDECESSORS = {"actbench.models.mlp.MLP": "actbench.model.PackedMLP", "actbench.models.cnn.ConvNet": "actbench.convnet.PackedConvNet"}


# Keys added to the config after runs were made, at the value that computes what those runs did:
# left out of the hash at that value, so the older runs keep their identity (a run that sets
# another value hashes it). `match_params` changes nothing for a pointwise activation, and a
# gated one could not run before it came; no residual, no schedule and no clipping are the
# models and steps as they were.
ADDED_KEYS = {"model.match_params": True, "model.residual": False, "optimizer.schedule": {"warmup": 0, "decay": "none", "min_lr": 0.0}, "trainer.clip_norm": None}


def config_hash(config: dict, exclude) -> str:
    """What a run computes, as a short hash of its resolved config minus the keys that only say
    where or how fast it runs: a finished run is only skipped for the same computation."""
    import json

    exclude = set(exclude)
    model = config.get("model")
    if isinstance(model, dict) and model.get("_target_") in PREDECESSORS:
        config = {**config, "model": {**model, "_target_": PREDECESSORS[model["_target_"]]}}

    def strip(node, prefix=""):
        if not isinstance(node, dict):
            return node
        return {k: strip(v, f"{prefix}{k}.") for k, v in node.items()
                if not excluded(prefix + k, exclude) and not (prefix + k in ADDED_KEYS and v == ADDED_KEYS[prefix + k])}

    return hashlib.sha1(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_member_hydra_dirs(runs, job_dir: Path) -> None:
    """Give each packed member's run directory the .hydra/ an unpacked run of it would have: its
    config and overrides, and the pack job's hydra.yaml with the fields that differ between runs
    made the member's: task overrides, override_dirname, output directory and config-group
    choices (the job's number and id stay the pack's)."""
    import yaml

    src = job_dir / ".hydra" / "hydra.yaml"
    job = OmegaConf.load(src) if src.exists() else None
    for run in runs:
        dst = run.dir / ".hydra"
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg))
        (dst / "overrides.yaml").write_text(yaml.safe_dump(list(run.task_overrides)))
        if job is not None:
            (dst / "hydra.yaml").write_text(OmegaConf.to_yaml(member_hydra(job, run)))


def member_hydra(job: DictConfig, run) -> DictConfig:
    """The pack job's hydra.yaml as an unpacked job of `run` would have it."""
    hydra = copy.deepcopy(job)
    h = hydra.hydra
    with open_dict(h):
        h.overrides.task = list(run.task_overrides)
        dirname = h.job.config.override_dirname
        # as Hydra names a job: its overrides but the excluded keys (exactly those), sorted as written
        kept = sorted(o for o in run.task_overrides if override_key(o) not in dirname.exclude_keys)
        h.job.override_dirname = dirname.item_sep.join(dirname.kv_sep.join(o.split("=", 1)) for o in kept)
        h.runtime.output_dir = str(run.dir)
        h.runtime.choices = dict(run.choices)
    return hydra


def pending(runs, cfg, speak: bool = True) -> dict[tuple | None, list]:
    """The runs still to train, by the point they start from (None: a fresh start); finished and
    diverged runs are skipped with a line each. Read only once the runs are owned: what their files
    say may change until then."""
    from hydra.utils import get_class

    from actbench.checkpoints import resume_point
    from actbench.results import Status, read_metrics

    todo: dict[tuple | None, list] = {}
    for r in runs:
        done = read_metrics(r.dir) if cfg.skip_finished else None
        ckpt = r.dir / "checkpoints" / cfg.checkpoint_name
        # a failed run of another configuration is retried afresh only when it left no checkpoint: one
        # it left holds that configuration's epochs, not this one's to resume from, and resumable
        # under its own (say, after a full disk): refused like a finished one, nothing is thrown away
        if done and done.get("config_hash", r.config_hash) != r.config_hash and (done.get("status") != Status.FAILED or ckpt.exists()):
            raise UserError(
                f"{r.dir} holds a run of a different configuration (another preset, or conf/ changed); "
                "give this sweep another name= or delete that directory"
            )
        if done and done.get("status") in (Status.FINISHED, Status.DIVERGED):
            what = get_class(cfg.data._target_).summary(done["final"]) if done.get("final") else done["status"]
            if speak:
                say(f"{r.name}: already {done['status']} ({what}), skipped")
            continue
        point = resume_point(ckpt) if cfg.skip_finished else None
        gone = ""
        if done and done.get("status") == Status.RUNNING:
            # this process owns the run now, so the one that wrote "running" is gone (killed, or its node lost)
            host = done.get("host") or {}
            who = f" (pid {host['pid']} on host {host.get('hostname')})" if host.get("pid") else ""
            gone = f"was running{who}, but its process is gone"
        recorded = len((done or {}).get("curves", {}).get("epoch") or [])
        if speak and point is None and recorded:
            # killed between an epoch's line and its checkpoint: say so, rather than retrain it unannounced
            say(f"{r.name}: {gone + '; ' if gone else ''}no checkpoint of its {recorded} recorded epoch(s), so it starts over")
        elif speak and gone:
            say(f"{r.name}: {gone}")  # train_packs says from where it resumes
        todo.setdefault(point, []).append(r)
    return todo
