"""segkit.png writes PNGs that decode to exactly the array written, with either deflate (ISA-L or zlib).

Decoded twice: by Pillow and by FFmpeg's PNG decoder (through PyAV), two independent readers; Pillow's
``verify`` also checks every chunk's CRC. Sizes stay near Pillow's own files.
"""

import io
import zlib

import av
import numpy as np
import pytest
from PIL import Image

from segkit import png, render

from test_render_exact import _instance, _photo, _prompted


@pytest.fixture(params=["isal", "zlib"])
def deflate(request, monkeypatch):
    """Each test with ISA-L's deflate (the dependency) and with zlib (where python-isal has no wheel)."""
    if request.param == "zlib":
        monkeypatch.setattr(png, "_deflate", zlib)
        monkeypatch.setattr(png, "LEVEL", 1)
    else:
        from isal import isal_zlib

        assert png._deflate is isal_zlib  # installed with segkit wherever it has wheels
    return request.param


def _decoded(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # signature, chunk layout and CRCs
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _written(image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    png.write_png(image, buffer, **kwargs)
    return buffer.getvalue()


RNG = np.random.default_rng(5)
ARRAYS = {
    "photo RGB": _photo(3),
    "RGBA": RNG.integers(0, 256, (37, 41, 4), dtype=np.uint8),
    "grey": RNG.integers(0, 256, (64, 3), dtype=np.uint8),
    "16-bit": RNG.integers(0, 65536, (29, 31), dtype=np.uint16),
    "one pixel": np.array([[200]], dtype=np.uint8),
    "one row": RNG.integers(0, 256, (1, 9, 3), dtype=np.uint8),
    "one column": RNG.integers(0, 256, (9, 1), dtype=np.uint8),
}
MODES = {"photo RGB": "RGB", "RGBA": "RGBA", "grey": "L", "16-bit": "I;16", "one pixel": "L", "one row": "RGB",
         "one column": "L"}


@pytest.mark.parametrize("name", ARRAYS)
def test_arrays_decode_to_themselves(name, deflate):
    decoded = _decoded(_written(ARRAYS[name]))
    assert decoded.mode == MODES[name]
    assert np.array_equal(np.asarray(decoded), ARRAYS[name])


def test_many_bands_and_a_second_decoder(deflate, tmp_path, monkeypatch):
    """An image filtered and deflated a row at a time reads back whole, in Pillow and in FFmpeg."""
    monkeypatch.setattr(png, "_BAND_BYTES", 1000)  # bands of one row
    image = np.ascontiguousarray(np.repeat(_photo(4), 3, axis=0)[:, ::-1])  # 450 rows, not a band multiple
    path = tmp_path / "bands.png"
    png.write_png(image, path)
    assert np.array_equal(np.asarray(_decoded(path.read_bytes())), image)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert np.array_equal(frame.to_ndarray(format="rgb24"), image)


def test_segkit_label_images_and_palettes(deflate):
    """The label PNGs segkit writes: a palette image keeps its colours, 16-bit ids stay 16-bit."""
    labels = render.label_image(_prompted())
    again = _decoded(_written(labels))
    assert again.mode == "P" and np.array_equal(np.asarray(again), np.asarray(labels))
    assert again.getpalette() == labels.getpalette()
    ids = render.label_image(_instance())
    again = _decoded(_written(ids))
    assert again.mode == "I;16" and np.array_equal(np.asarray(again), np.asarray(ids))
    indices = RNG.integers(0, 3, (20, 30), dtype=np.uint8)
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 9, 250]], dtype=np.uint8)
    again = _decoded(_written(indices, palette=colors))
    assert again.mode == "P" and np.array_equal(np.asarray(again), indices)
    assert again.getpalette()[:9] == colors.ravel().tolist()
    assert np.array_equal(np.asarray(again.convert("RGB")), colors[indices])


def test_sizes_near_pillows(deflate):
    """A photo-like overlay and a heatmap come out at most 15% larger than Pillow's level-1 files."""
    yy, xx = np.mgrid[:300, :400]
    heat = np.exp(-((yy - 120) ** 2 + (xx - 200) ** 2) / 9000.0)
    photo = np.clip(np.stack([xx * 255 // 400, yy * 255 // 300, (xx + yy) % 256], -1)
                    + RNG.integers(-20, 21, (300, 400, 3)), 0, 255).astype(np.uint8)
    for image in (photo, render.heatmap_gray(heat)):
        pillow = io.BytesIO()
        Image.fromarray(image).save(pillow, format="PNG", compress_level=1)
        assert len(_written(image)) <= 1.15 * pillow.tell()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), np.float32), "float32"),
    (np.zeros((4, 4, 2), np.uint8), r"\(4, 4, 2\)"),
    (np.zeros((0, 4, 3), np.uint8), r"\(0, 4, 3\)"),
    (np.zeros((4, 4, 3), np.uint16), "16-bit"),
    (Image.new("F", (2, 2)), "mode"),
])
def test_refuses_what_it_cannot_write(bad, message):
    with pytest.raises(ValueError, match=message):
        png.write_png(bad, io.BytesIO())


def test_palette_only_for_indices():
    with pytest.raises(ValueError, match="palette"):
        png.write_png(np.zeros((2, 2, 3), np.uint8), io.BytesIO(), palette=[[0, 0, 0]])
