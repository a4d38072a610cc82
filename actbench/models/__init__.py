"""The shipped models, each plain PyTorch in one file, written as for a single run: actbench
packs, initialises and probes them (actbench.packer), and a user's model looks the same. What a
model's keys must be is its own constructor's to say, as a ValueError that starts `key=value:`
(actbench reports it as one line naming `model.key`); these two say it for the shipped models."""


def positive_ints(**values) -> None:
    for key, value in values.items():
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{key}={value!r}: must be an integer >= 1")


def dropout_rate(p) -> None:
    if not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ValueError(f"dropout={p!r}: must be a number in [0, 1)")


def matched_width(width: int, per_out: int, params, match: bool = True) -> int:
    """The hidden width for an activation taking `per_out` inputs per output (a gated one: 2):
    with `match`, the width whose parameter count, `params(width, per_out)`, is nearest to the
    pointwise layer's, `params(width, 1)` (Shazeer 2020's parameter match: a Transformer's
    feed-forward 3072 -> 2048); without, `width` itself."""
    if not isinstance(match, bool):
        raise ValueError(f"match_params={match!r}: must be true or false")
    if per_out == 1 or not match:
        return width
    target = params(width, 1)
    return min(range(1, width + 1), key=lambda w: abs(params(w, per_out) - target))
