"""PNG images without a plotting library: attention maps and piano-rolls as colour heat-maps.

A PNG is a signature plus zlib-compressed scanlines in CRC-checked chunks (RFC 2083); writing
8-bit RGB needs nothing beyond zlib, so seqtool does not depend on matplotlib or Pillow for it.
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np

__all__ = ["encode_png", "write_png", "heatmap_rgb", "VIRIDIS_STOPS"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A few stops of matplotlib's viridis (perceptually uniform, readable in grey): linear in between.
VIRIDIS_STOPS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
], dtype=np.float64)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG for an (H, W, 3) uint8 array (H, W >= 1)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    height, width = rgb.shape[:2]
    # Each scanline starts with its filter type; 0 (none) keeps the writer trivial.
    raw = np.concatenate([np.zeros((height, 1), np.uint8),
                          np.ascontiguousarray(rgb).reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _chunk(b"IEND", b""))


def write_png(path, rgb: np.ndarray) -> None:
    """Write `rgb` as a PNG to `path` atomically ('-': stdout)."""
    data = encode_png(rgb)
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from seqtool.io.fileio import atomic_open

    with atomic_open(path, "wb") as f:
        f.write(data)


def heatmap_rgb(values, vmin: float | None = None, vmax: float | None = None,
                scale: int = 1) -> np.ndarray:
    """Colour a 2-D array with viridis: (H, W) -> (H*scale, W*scale, 3) uint8, row 0 on top.

    vmin/vmax default to the data's range; NaN cells are drawn black. `scale` repeats each cell
    as a scale x scale block so small maps (a 6x8 attention matrix) are visible.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"expected a non-empty 2-D array, got shape {v.shape}")
    if scale < 1:
        raise ValueError("scale must be >= 1")
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (1.0 if vmax is None else vmax)
    span = hi - lo if hi > lo else 1.0
    t = np.clip((np.nan_to_num(v, nan=lo) - lo) / span, 0.0, 1.0) * (len(VIRIDIS_STOPS) - 1)
    i = np.minimum(t.astype(np.int64), len(VIRIDIS_STOPS) - 2)
    frac = (t - i)[..., None]
    rgb = VIRIDIS_STOPS[i] * (1 - frac) + VIRIDIS_STOPS[i + 1] * frac
    rgb[~np.isfinite(v)] = 0.0
    rgb = np.rint(rgb).astype(np.uint8)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return rgb
