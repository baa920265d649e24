"""seqtool.io.png: the bytes must be a valid PNG holding exactly the pixels given."""

import struct
import zlib

import numpy as np
import pytest

from seqtool.io.png import VIRIDIS_STOPS, encode_png, heatmap_rgb, write_png


def _decode(data: bytes) -> np.ndarray:
    """An independent reader for the subset we write: checks every CRC, handles filter 0 only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append((kind, body))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_round_trip_random_image():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(encode_png(rgb)), rgb)


def test_pillow_reads_it(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(1).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png").convert("RGB")), rgb)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8)])
def test_rejects_non_rgb(bad):
    with pytest.raises(ValueError):
        encode_png(bad)


def test_heatmap_ends_and_scale():
    v = np.array([[0.0, 0.5], [1.0, np.nan]])
    img = heatmap_rgb(v, scale=3)
    assert img.shape == (6, 6, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, 0], VIRIDIS_STOPS[0])  # minimum -> first stop
    np.testing.assert_array_equal(img[3, 0], VIRIDIS_STOPS[-1])  # maximum -> last stop
    np.testing.assert_array_equal(img[3, 3], [0, 0, 0])  # NaN -> black
    mid = VIRIDIS_STOPS[len(VIRIDIS_STOPS) // 2]  # 9 stops: 0.5 lands exactly on the middle one
    np.testing.assert_array_equal(img[0, 3], mid)
    # explicit range: values outside are clipped to the ends
    img2 = heatmap_rgb(np.array([[-1.0, 2.0]]), vmin=0.0, vmax=1.0)
    np.testing.assert_array_equal(img2[0, 0], VIRIDIS_STOPS[0])
    np.testing.assert_array_equal(img2[0, 1], VIRIDIS_STOPS[-1])
