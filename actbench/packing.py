"""Which runs of a sweep train together: jobs whose overrides differ only in `seed` and in the
activation (its choice and its own keys) become one packed job, and how such a pack travels as
one job's overrides (`members=[[...], ...]`, each member its own overrides).

Pure functions of override strings: the packing sweeper (hydra_plugins/actbench_sweeper) calls
`pack_jobs` on the jobs Hydra's grammar expanded; `train` reads `members` back. Whether the
members really agree on everything else is checked again in the job, on composed configs.
"""

from __future__ import annotations

MEMBERS_KEY = "members"
SEEDS_KEY = "seeds"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_member_key(key: str) -> bool:
    """The keys that may differ between the members of one pack: the seed and the activation."""
    return key == "seed" or key == "activation" or key.startswith("activation.")


def parse_value(override: str):
    """The value of one override, as Hydra's grammar reads it (`seeds=[0,1]` -> [0, 1])."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([override])[0].value()


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def members_override(members: list[list[str]]) -> str:
    """`members=[['activation=relu','seed=0'],...]`: a pack's members as one override."""
    return f"{MEMBERS_KEY}=[" + ",".join("[" + ",".join(quote(o) for o in m) + "]" for m in members) + "]"


def expand_seeds(job: list[str]) -> tuple[list[str], list[list[str]]]:
    """A job as (its overrides but `seeds` and `seed`, one member per seed of `seeds=[...]`);
    a job without `seeds` as (its overrides but `seed`, [its `seed` override or nothing])."""
    rest = [o for o in job if override_key(o) not in (SEEDS_KEY, "seed")]
    seeds = next((o for o in job if override_key(o) == SEEDS_KEY), None)
    values = parse_value(seeds) if seeds is not None else None
    if values is None:
        return rest, [[o for o in job if override_key(o) == "seed"]]
    return rest, [[f"seed={s}"] for s in values]


def without_swept_seed(job: list[str]) -> list[str]:
    """`seeds=[...]` replaces any `seed` (a preset's `seed: 0,1,2` and a command line's
    `seeds=[...]` ask for the same seeds once)."""
    if not any(override_key(o) == SEEDS_KEY for o in job):
        return list(job)
    return [o for o in job if override_key(o) != "seed"]


def pack_jobs(jobs: list[list[str]], pack: bool = True, max_pack: int | None = None) -> list[list[str]]:
    """The jobs to launch for a sweep's expanded jobs. With `pack`, every group of jobs that
    differ only in member keys becomes one job (common overrides + `members=...`), in packs of
    at most `max_pack`; a group of one stays the plain job. Without, one job per run (a job's
    own `seeds=[...]` still trains its seeds packed, as asked). The same run asked twice is
    launched once."""
    if not pack:
        return [list(j) for j in dict.fromkeys(tuple(without_swept_seed(job)) for job in jobs)]
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for job in jobs:
        rest, seed_members = expand_seeds(list(job))
        common = tuple(o for o in rest if not is_member_key(override_key(o)))
        own = [o for o in rest if is_member_key(override_key(o))]
        group = groups.setdefault(common, [])
        for seed in seed_members:
            member = [*own, *seed]
            if member not in group:
                group.append(member)
    out = []
    for common, members in groups.items():
        size = max_pack or len(members)
        for i in range(0, len(members), size):
            chunk = members[i : i + size]
            out.append([*common, *chunk[0]] if len(chunk) == 1 else [*common, members_override(chunk)])
    return out


# ---------------------------------------------------------------- in the job, on composed configs


def shared_part(cfg) -> str:
    """What every member of a pack must agree on: the resolved config but the member keys (seed,
    activation) and the keys that only name the job's members."""
    import json

    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("seed", "seeds", "activation", MEMBERS_KEY):
        config.pop(key, None)
    return json.dumps(config, sort_keys=True, default=str)


_SHAPES: dict[str, tuple[bool, int]] = {}


def shape_key(cfg) -> str:
    """What of a run's activation sets its model's shapes: a learnable one (PReLU, swish_beta)
    holds parameters no other has (its key is its whole config), a gated one takes 2 inputs per
    output (its layers are wider than a pointwise one's); "" for a fixed pointwise one."""
    from actbench import activations

    key = activation_key(cfg)
    if key not in _SHAPES:
        fn = activations.build(cfg.activation)
        _SHAPES[key] = (activations.is_learnable(fn), activations.in_per_out(fn))
    learnable, per_out = _SHAPES[key]
    return key if learnable else "" if per_out == 1 else f"in_per_out={per_out}"


def activation_key(cfg) -> str:
    import json

    from omegaconf import OmegaConf

    return json.dumps(OmegaConf.to_container(cfg.activation, resolve=True), sort_keys=True, default=str)


def optimizer_name(cfg) -> str:
    from hydra.utils import get_object

    target = get_object(cfg.optimizer._target_)
    return getattr(target, "__name__", str(target))


def split_packs(runs: list, limit: int | None) -> tuple[list[list], str | None]:
    """A job's runs (that start from the same point) as the packs they train in: members that
    disagree on anything but seed and activation go to separate packs (and so do members whose
    activations give the model other shapes: a learnable one, a gated one), members of one activation sit side by side
    (one activation call for all of them), and no pack holds more than `limit`.
    With an optimizer that mixes the values of a weight matrix, every run trains alone; the
    second value then says why, in one line."""
    from actbench.model import ELEMENTWISE_OPTIMIZERS

    from actbench.model import model_class

    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(shared_part(run.cfg) + shape_key(run.cfg), []).append(run)
    why = None
    packs = []
    for group in groups.values():
        name = optimizer_name(group[0].cfg)
        size = limit or len(group)
        cannot = getattr(model_class(group[0].cfg), "unpackable", lambda: [])()
        if len(group) > 1 and cannot:
            why = f"cannot pack {', '.join(cannot)} (its parameters sit beside sub-layers): training these {len(group)} runs one after another"
            size = 1
        elif len(group) > 1 and name not in ELEMENTWISE_OPTIMIZERS:
            why = (f"optimizer {name} mixes the values of a weight matrix, so packed runs would not train as apart; "
                   f"training these {len(group)} runs one after another (elementwise optimizers pack: {', '.join(ELEMENTWISE_OPTIMIZERS[:4])}, ...)")
            size = 1
        order = list(dict.fromkeys(activation_key(r.cfg) for r in group))
        group = sorted(group, key=lambda r: order.index(activation_key(r.cfg)))
        packs += [group[i : i + size] for i in range(0, len(group), size)]
    return packs, why
