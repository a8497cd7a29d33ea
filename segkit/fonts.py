"""Fonts for captions, legends and grid titles in any script the machine has a font for.

The default fonts (Pillow's Aileron, matplotlib's DejaVu Sans) stay in use for the text they cover, so
Latin captions look as they always did; other text (a Japanese prompt, say) gets a font that has its
glyphs, found through fontconfig, the optional ``segkit[fonts-ja]`` extra (IPAexGothic) or a scan of the
system's font folders. Text no installed font covers is drawn with the default font (as empty boxes)
after one warning per script naming what to install.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import unicodedata
import warnings
from pathlib import Path

FontFile = tuple[str, int]  # (path, face index within a .ttc collection)

_CJK_SCRIPTS = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH", "BOPOMOFO"}
_CJK_HINT = 'apt install fonts-noto-cjk (Debian/Ubuntu), or pip install "segkit[fonts-ja]" for Japanese'
_OTHER_HINT = "apt install fonts-noto-core (Debian/Ubuntu), or any font with these letters"
# Font names tried first when scanning folders without fontconfig (macOS, Windows).
_LIKELY_NAMES = ("noto", "cjk", "source han", "hiragino", "gothic", "meiryo", "yu", "msgothic", "ipa", "takao",
                 "pingfang", "hei", "song", "ming", "malgun", "gulim", "arialuni")
_warned_scripts: set[str] = set()


def pil_font_file(text: str) -> FontFile | None:
    """The font file Pillow should draw ``text`` with, or None for Pillow's default font (it has every
    glyph, or no installed font does). Open it with ``ImageFont.truetype(path, size, index=index)``."""
    return _font_file_for_text(text, _pil_default_cmap())


def matplotlib_font(text: str):
    """``FontProperties`` for a matplotlib title of ``text``, or None where the default font covers it.

    The font is given by file, so fonts installed after matplotlib built its font cache work too.
    """
    import matplotlib
    from matplotlib.font_manager import FontProperties

    found = _font_file_for_text(text, _matplotlib_default_cmap())
    if found is None:
        return None
    return FontProperties(fname=found[0], size=matplotlib.rcParams["axes.titlesize"],
                          weight=matplotlib.rcParams["axes.titleweight"])


def script_of(char: str) -> str:
    """A character's script, as the first word of its Unicode name (``CJK``, ``HIRAGANA``, ``ARABIC``)."""
    name = unicodedata.name(char, "")
    return name.split()[0] if name else f"U+{ord(char):04X}"


def _font_file_for_text(text: str, default_cmap: frozenset[int]) -> FontFile | None:
    """The font file to draw ``text`` with, or None for the default font (it covers the text, or
    nothing installed does: then warn once per uncovered script)."""
    missing = frozenset(ord(c) for c in text if unicodedata.category(c)[0] not in "CZ") - default_cmap
    if not missing:
        return None
    found = covering_font(missing)
    if found is not None:
        return found
    by_script: dict[str, set[int]] = {}
    for code in missing:
        by_script.setdefault(script_of(chr(code)), set()).add(code)
    drawable = set()
    for script, codes in sorted(by_script.items()):
        if covering_font(frozenset(codes)) is not None:
            drawable |= codes
        else:
            _warn_missing(script, chr(min(codes)))
    return covering_font(frozenset(drawable)) if drawable else None


def _warn_missing(script: str, example: str) -> None:
    if script in _warned_scripts:
        return
    _warned_scripts.add(script)
    hint = _CJK_HINT if script in _CJK_SCRIPTS else _OTHER_HINT
    warnings.warn(f"segkit: no installed font has {script} letters such as {example!r}; they are drawn as "
                  f"empty boxes. Install a font: {hint}", stacklevel=4)


@functools.lru_cache(maxsize=256)
def covering_font(codes: frozenset[int]) -> FontFile | None:
    """An installed font with a glyph for every code point in ``codes``, preferring regular sans faces."""
    return _fontconfig_font(codes) or _bundled_font(codes) or _scanned_font(codes)


def _fontconfig_font(codes: frozenset[int]) -> FontFile | None:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    charset = " ".join(f"{c:x}" for c in sorted(codes))
    try:
        listing = subprocess.run(
            [fc_list, "--format", "%{file}\t%{index}\t%{family[0]}\t%{style[0]}\n",
             f":charset={charset}:scalable=true"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    faces = []
    for line in listing.splitlines():
        path, index, family, style = (line.split("\t") + ["", "", ""])[:4]
        if path and index.isdigit() and Path(path).is_file():
            faces.append((_preference(family, style, int(index)), path, int(index)))
    return min(faces)[1:] if faces else None


def _preference(family: str, style: str, index: int) -> tuple:
    """Sort key: regular upright sans faces first, monospace last, the first face of a collection."""
    family, style = family.lower(), style.lower()
    return (style not in ("regular", "book", "normal", "roman", "medium"),
            "sans" not in family and "gothic" not in family,
            "mono" in family, index, family)


def _bundled_font(codes: frozenset[int]) -> FontFile | None:
    """IPAexGothic from ``matplotlib-fontja`` (the ``fonts-ja`` extra), found without importing the
    package: importing it switches every matplotlib figure of the process to that font."""
    try:
        spec = importlib.util.find_spec("matplotlib_fontja")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "fonts" / "ipaexg.ttf"
        if path.is_file() and codes <= _cmap(str(path), 0):
            return str(path), 0
    return None


def _scanned_font(codes: frozenset[int]) -> FontFile | None:
    """A font from the system's font folders (matplotlib's live scan, not its cache), likely names first."""
    from matplotlib import font_manager

    paths = [p for p in font_manager.findSystemFonts() if p.lower().endswith((".ttf", ".otf", ".ttc"))]
    paths.sort(key=lambda p: (not any(n in Path(p).name.lower() for n in _LIKELY_NAMES), p))
    for path in paths:
        if codes <= _cmap(path, 0):
            return path, 0
    return None


@functools.lru_cache(maxsize=None)
def _cmap(path: str, index: int) -> frozenset[int]:
    """Code points a font file's face has glyphs for (empty for a file that is not a readable font)."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except (OSError, TTLibError, KeyError, AssertionError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=1)
def _pil_default_cmap() -> frozenset[int]:
    import io

    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    font_bytes = getattr(ImageFont.load_default(size=12), "font_bytes", None)
    if font_bytes is None:  # Pillow without FreeType: the bitmap font covers Latin-1
        return frozenset(range(0x20, 0x100))
    with TTFont(io.BytesIO(font_bytes), lazy=True) as font:
        return frozenset(font.getBestCmap() or ())


def _matplotlib_default_cmap() -> frozenset[int]:
    from matplotlib.font_manager import FontProperties, findfont

    return _cmap(findfont(FontProperties()), 0)
