"""Captions, legends and grid titles in Japanese: real glyphs, not empty boxes ("tofu").

Needs a font with Japanese glyphs (Debian: fonts-noto-cjk, which .ci/run installs): the tests fail
under CI without one and skip elsewhere. A font with no glyph for a character draws its one
"missing glyph" box for every such character, so two different characters that draw differently
prove the font has both.
"""

import sys
import warnings

import numpy as np
import pytest

from segkit import fonts, render
from segkit.result import Result, boxes_from_masks
from system import missing

JAPANESE = "猫犬写真"


@pytest.fixture(scope="module")
def japanese_font():
    found = fonts.pil_font_file(JAPANESE)
    if found is None:
        reason = "no installed font has Japanese glyphs (Debian: apt install fonts-noto-cjk)"
        missing(reason)
    return found


def _draw(text, font, size=(120, 48)):
    from PIL import Image, ImageDraw

    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).text((4, 4), text, fill=255, font=font)
    return np.asarray(image)


def test_found_font_draws_japanese_glyphs(japanese_font):
    from PIL import ImageFont

    found = ImageFont.truetype(japanese_font[0], 28, index=japanese_font[1])
    default = ImageFont.load_default(size=28)
    assert fonts.covering_font(frozenset(map(ord, JAPANESE))) == japanese_font
    # The default font draws the same box for both characters: that is the failure being fixed.
    assert np.array_equal(_draw("猫", default), _draw("犬", default))
    cat, dog = _draw("猫", found), _draw("犬", found)
    assert cat.any() and dog.any() and not np.array_equal(cat, dog)
    assert not np.array_equal(cat, _draw("猫", default))
    assert not np.array_equal(_draw("写真", found), _draw("真写", found))


def test_latin_text_keeps_the_default_fonts():
    assert fonts.pil_font_file("cat 0.93") is None
    assert fonts.pil_font_file("") is None
    assert fonts.matplotlib_font("a photo of a cat") is None


def _prompted(labels, h=90, w=120):
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack([(yy - 40) ** 2 + (xx - 35) ** 2 < 400, (yy - 50) ** 2 + (xx - 85) ** 2 < 300])
    heat = masks.astype(np.float32) * 0.8
    return Result("prompted", masks, labels, [0.8, 0.8], boxes_from_masks(masks), heatmaps=heat,
                  label_map=np.where(masks[0], 1, np.where(masks[1], 2, 0)))


def test_overlay_captions_and_legend_in_japanese(japanese_font):
    image = np.full((90, 120, 3), 90, np.uint8)
    cat = render.overlay(image, _prompted(["猫", "写真"]))
    dog = render.overlay(image, _prompted(["犬", "写真"]))
    differ = (cat != dog).any(-1)
    assert differ.any()  # with empty boxes both would be identical
    ys, xs = np.nonzero(differ)
    assert xs.max() < 70  # only the first caption and its legend row changed, not the second caption
    legend_only = render.overlay(image, _prompted(["猫", "写真"]), captions=False)
    assert not np.array_equal(legend_only, render.overlay(image, _prompted(["犬", "写真"]), captions=False))


def test_grid_titles_in_japanese_without_missing_glyphs(japanese_font):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def pixels(labels):
        fig = render.grid_figure(np.full((90, 120, 3), 90, np.uint8), _prompted(labels))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba()).copy()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat, dog = pixels(["猫", "写真"]), pixels(["犬", "写真"])
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert not np.array_equal(cat, dog)
    assert fonts.matplotlib_font("猫").get_file() == japanese_font[0]


def test_font_search_without_fontconfig(japanese_font, monkeypatch):
    """macOS and Windows have no fc-list: the system's font folders are scanned (live, not the
    matplotlib cache, which does not see fonts installed after it was built)."""
    monkeypatch.setattr(fonts.shutil, "which", lambda name: None)
    codes = frozenset(map(ord, JAPANESE))
    assert fonts._fontconfig_font(codes) is None
    path, index = fonts._scanned_font(codes)
    assert codes <= fonts._cmap(path, index)


def test_fonts_ja_extra_is_found_without_importing_it(japanese_font, tmp_path, monkeypatch):
    """matplotlib-fontja ships IPAexGothic; importing it would restyle every figure, so only its
    font file is used."""
    package = tmp_path / "matplotlib_fontja"
    (package / "fonts").mkdir(parents=True)
    (package / "__init__.py").write_text("raise AssertionError('imported')\n")
    (package / "fonts" / "ipaexg.ttf").symlink_to(japanese_font[0])  # any font with the glyphs will do
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fonts._bundled_font(frozenset(map(ord, JAPANESE))) == (str(package / "fonts" / "ipaexg.ttf"), 0)
    assert "matplotlib_fontja" not in sys.modules


def test_one_warning_per_script_when_no_font_has_the_text(monkeypatch):
    monkeypatch.setattr(fonts, "covering_font", lambda codes: None)
    monkeypatch.setattr(fonts, "_warned_scripts", set())
    with pytest.warns(UserWarning) as caught:
        assert fonts.pil_font_file("猫 ねこ") is None
        assert fonts.pil_font_file("犬") is None
        assert fonts.matplotlib_font("写真") is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2  # CJK and HIRAGANA, once each
    assert all("apt install fonts-noto-cjk" in m and 'pip install "segkit[fonts-ja]"' in m for m in messages)
    assert any("CJK" in m for m in messages) and any("HIRAGANA" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fonts.pil_font_file("猫")  # already warned: silent


def test_text_in_two_scripts_uses_the_font_that_covers_what_it_can(japanese_font, monkeypatch):
    """A script no font covers (Brahmi, made so whatever the machine has): warn about it, and still draw the
    Japanese with a Japanese font."""
    monkeypatch.setattr(fonts, "_warned_scripts", set())
    brahmi = "\U00011013"
    covering = fonts.covering_font
    monkeypatch.setattr(fonts, "covering_font", lambda codes: None if ord(brahmi) in codes else covering(codes))
    with pytest.warns(UserWarning, match="BRAHMI"):
        assert fonts.pil_font_file("猫" + brahmi) == japanese_font
