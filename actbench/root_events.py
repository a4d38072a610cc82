"""The sweep directory's own TensorBoard events, the run TensorBoard lists as `.`: the HParams
experiment (actbench.hparams_tab) and the report's figures (`write_figures`). Each kind is one
file, rewritten whole and named with its own suffix, so that a rewrite replaces only its kind.

Rewritten, not appended to: TensorBoard keeps a tag's first description and a figure's every
version, where a sweep's root must show what its runs hold now.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import time
from pathlib import Path

from actbench.files import atomic_write

EXPERIMENT_SUFFIX, FIGURES_SUFFIX = ".hparams", ".figures"  # the HParams experiment's file, the figures'


def write(root: Path, summaries: list, suffix: str) -> Path:
    """Replace root's events file of this `suffix` by one holding these Summary protos (at step 0)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    now = time.time()
    events = [Event(wall_time=now, file_version="brain.Event:2")] + [Event(wall_time=now, step=0, summary=s) for s in summaries]
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString())
    # nanoseconds, zero-padded: names sort as they were written, and TensorBoard reads a
    # directory's files in name order
    path = atomic_write(root / f"events.out.tfevents.{time.time_ns():020d}.{socket.gethostname()}.{os.getpid()}{suffix}",
                        buffer.getvalue())
    _remove(root, suffix, before=path.name)  # older ones only: of two processes that rewrite it at once, the later file stays
    return path


def _remove(root: Path, suffix: str, before: str | None = None) -> None:
    """root's events files of this suffix (those named before `before`, if given)."""
    for old in root.glob(f"events.out.tfevents.*{suffix}"):
        if before is None or old.name < before:
            old.unlink(missing_ok=True)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def write_figures(root: Path | str, figures: list[tuple[str, Path]]) -> Path | None:
    """The report's figures, (tag, PNG file) each, as images of root's own run, replacing those
    written before; None (and no file) when there are none."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    root = Path(root)
    values = []
    for tag, path in figures:
        data = Path(path).read_bytes()
        width, height = png_size(data)
        # the PNG as it is: TensorBoard shows encoded images, so nothing is decoded or re-encoded
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
        values.append(Summary.Value(tag=tag, image=image))
    if not values:
        _remove(root, FIGURES_SUFFIX)
        return None
    return write(root, [Summary(value=values)], FIGURES_SUFFIX)
