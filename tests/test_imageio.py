"""Reading images: every mode becomes correct 8-bit RGB; bad files give one clear line."""

import numpy as np
import pytest
from PIL import Image

from segkit.errors import ImageReadError
from segkit.imageio import as_rgb_array, read_image


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_modes_convert_to_rgb(tmp_path):
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    out = read_image(_save(tmp_path, "g.png", gray))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[..., 0] == np.asarray(gray)).all() and (out[..., 1] == out[..., 2]).all()

    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert (read_image(_save(tmp_path, "a.png", rgba)) == [10, 20, 30]).all()  # alpha dropped, as detectron2 does
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert (read_image(_save(tmp_path, "o.png", opaque)) == [10, 20, 30]).all()

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert (read_image(_save(tmp_path, "p.png", pal)) == [200, 100, 50]).all()

    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red
    assert (read_image(_save(tmp_path, "c.jpg", cmyk, quality=100))[..., 0] > 240).all()


def test_16bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 255]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = read_image(path)
    assert out[0, :, 0].tolist() == [0, 100, 255, 255]


def test_exif_orientation_applied(tmp_path):
    # Stored 60 wide x 20 high with a red block at the stored top-left; orientation 6 means
    # "rotate 90 degrees clockwise to display", which puts the block at the displayed top-right.
    stored = np.zeros((20, 60, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    out = read_image(path)
    assert out.shape == (60, 20, 3)
    assert out[:20, 10:, 0].mean() > 200 and out[:20, 10:, 1].mean() < 50  # top-right: red
    assert out[:20, :10, 0].mean() < 50 and out[40:, :, 0].mean() < 50  # elsewhere: black


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert read_image(path)[0, 0, 0] > 200


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"not an image at all", "not an image")])
def test_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_file(tmp_path, examples_dir):
    data = (examples_dir / "cat.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_pixel_limit(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("RGB", (100, 100)))
    with pytest.raises(ImageReadError, match="max_pixels=") as err:
        read_image(path, max_pixels=5000)
    assert err.value.for_cli().endswith("--max-pixels")
    assert read_image(path, max_pixels=10000).shape == (100, 100, 3)


def test_as_rgb_array_inputs(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    assert (as_rgb_array(arr) == arr).all()
    assert (as_rgb_array(Image.fromarray(arr)) == arr).all()
    assert (as_rgb_array(_save(tmp_path, "x.png", Image.fromarray(arr))) == arr).all()
    with pytest.raises(ImageReadError):
        as_rgb_array(arr.astype(np.float32))


@pytest.mark.parametrize("shape, dtype, message", [
    ((0, 0, 3), np.uint8, r"shape \(0, 0, 3\) has no pixels"),
    ((3, 40, 50), np.uint8, r"shape \(3, 40, 50\) looks channels-first; pass HxWxC, e\.g\. array\.transpose"),
    ((3, 40, 3), np.uint8, "looks channels-first"),  # not silently read as a 3-pixel-tall image
    ((4, 40, 4), np.uint8, "looks channels-first"),
    ((6, 7), np.float32, r"shape \(6, 7\) has dtype float32"),
    ((6, 7, 2), np.uint8, r"shape \(6, 7, 2\) is not HxW"),
])
def test_bad_arrays_are_refused_with_their_own_shape(shape, dtype, message):
    with pytest.raises(ImageReadError, match=message):
        as_rgb_array(np.zeros(shape, dtype))


def test_single_channel_and_rgba_arrays():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1) + 10
    out = as_rgb_array(np.concatenate([gray] * 5, axis=0))  # 15 x 4 x 1
    assert out.shape == (15, 4, 3) and (out == np.concatenate([gray] * 5, axis=0)).all()
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0] = 9
    assert as_rgb_array(rgba).shape == (6, 7, 3) and (as_rgb_array(rgba)[..., 0] == 9).all()
