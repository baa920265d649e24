"""Pictures of class activity over time: a terminal piano-roll (predict --roll) and a PNG
(predict --png)."""

from __future__ import annotations

import shutil

import numpy as np

__all__ = ["draw_roll", "roll_image"]

_LEVELS = " ▁▂▃▄▅▆▇█"  # activity 0..1 in nine steps


def _time_axis(n_cols: int, duration: float) -> str:
    """A tick label every 10 s (every 1 s for inputs under 30 s), where it fits."""
    step = 10.0 if duration >= 30 else 1.0
    axis = [" "] * n_cols
    for k in range(int(duration // step) + 1):
        col = int(k * step / duration * n_cols) if duration > 0 else 0
        label = f"{k * step:g}"
        if col + len(label) <= n_cols and all(ch == " " for ch in axis[max(0, col - 1):col + len(label)]):
            axis[col:col + len(label)] = list(label)
    return "".join(axis)


def draw_roll(probs, labels, hop_s, name, width=None):
    """Lines of a per-class activity piano-roll: one row per class, time left to right; each
    column shows the highest activity of its frames. ``width`` defaults to the terminal's."""
    label_w = max(len(lab) for lab in labels)
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    cols = max(10, width - label_w - 3)
    T = len(probs)
    edges = np.linspace(0, T, min(cols, T) + 1).astype(int)
    duration = T * hop_s
    lines = [f"{name}  ({duration:.1f} s, {duration / (len(edges) - 1):.2f} s per column)"]
    for c, lab in enumerate(labels):
        peaks = [probs[a:b, c].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])]
        cells = "".join(_LEVELS[int(round(p * (len(_LEVELS) - 1)))] for p in peaks)
        lines.append(f"{lab:>{label_w}} |{cells}|")
    lines.append(" " * (label_w + 2) + _time_axis(len(edges) - 1, duration))
    return lines


def roll_image(rolls):
    """(H, W, 3) uint8 image: one 12-pixel band per class for each input, inputs stacked with a
    4-pixel gap; columns are frames."""
    from seqtool.io.png import heatmap_rgb

    width = max(len(p) for p in rolls)
    parts = []
    for k, probs in enumerate(rolls):
        values = np.full((probs.shape[1], width), np.nan)
        values[:, :len(probs)] = probs.T  # (C, T): class rows, time columns
        band = heatmap_rgb(values, vmin=0.0, vmax=1.0)
        band = np.repeat(band, 12, axis=0)
        band[::12] = 0  # a dark line between classes
        if k:
            parts.append(np.zeros((4, width, 3), np.uint8) + 255)
        parts.append(band)
    return np.concatenate(parts, axis=0)
