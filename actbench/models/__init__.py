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
