"""Test-only models, named by runs through `model._target_=models.<Class>` (tests/ on PYTHONPATH)."""

from actbench.checks import POSITIVE_INT
from actbench.model import PackedMLP


class Blocks(PackedMLP):
    """The MLP under a key of its own, with its own rule: a model states what its keys must be."""

    RULES = {**PackedMLP.RULES, "blocks": POSITIVE_INT}

    def __init__(self, seeds, activation, blocks: int = 1, **kw):
        super().__init__(seeds, activation, depth=blocks, **kw)


class Broken(PackedMLP):
    """A model whose constructor fails: the run must be recorded as failed, with the reason."""

    def __init__(self, seeds, activation, **kw):
        raise RuntimeError("planted model failure")
