"""What a language model writes: at a run's end each member continues a fixed prompt
(`data.prompt`) by `data.sample_chars` characters, each drawn from its predicted distribution by
the member's own seeded stream, into its TensorBoard's text tab (`samples/text`) and `sample.txt`
in its run directory, so that a loss in nats per character comes with what it reads like."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from actbench.data import derive_seed

TAG = "samples/text"


@torch.no_grad()
def generate(net, prompt: Tensor, n: int, seeds: list[int], context: int) -> Tensor:
    """Each member's continuation of `prompt` (ids [t]) by n tokens: [K, t + n]."""
    k, device = len(seeds), prompt.device
    gens = [torch.Generator(device=device).manual_seed(derive_seed(s, "sample")) for s in seeds]
    ids = prompt.expand(k, 1, -1)
    for _ in range(n):
        probs = torch.softmax(net(ids[..., -context:])[:, 0, -1].float(), -1)  # [K, vocab]
        nxt = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)])
        ids = torch.cat([ids, nxt.view(k, 1, 1)], -1)
    return ids[:, 0]


class TextSamples(Callback):
    """Writes each member's sample after its test (a dataset that has no `decode` gets none)."""

    def on_test_end(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        if not (hasattr(data, "decode") and data.sample_chars and trainer.is_global_zero):
            return
        net, was_training = pl_module.net, pl_module.net.training
        net.eval()
        try:
            ids = generate(net, data.encode(data.prompt).to(pl_module.device), data.sample_chars, net.seeds, data.block_size)
        finally:
            net.train(was_training)
        for row, logger in zip(ids.tolist(), trainer.loggers):
            text = data.decode(row)
            # TensorBoard's text tab reads markdown: indented lines keep the text's own line breaks
            logger.experiment.add_text(TAG, "\n".join("    " + line for line in text.split("\n")), trainer.global_step)
            logger.experiment.flush()
            (Path(logger.log_dir) / "sample.txt").write_text(text)
