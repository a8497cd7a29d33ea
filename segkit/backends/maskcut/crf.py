"""demo.py's post-processing: a dense CRF per mask (pydensecrf), hole filling, and a sanity test that
drops masks the CRF changed too much; then the resize back to the photo's size.

pydensecrf is optional (``pip install "segkit[crf]"`` builds ``pydensecrf2`` from source, which needs a
C++ compiler); without it MaskCut returns the coarser patch-grid masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

ITERATIONS = 10
GAUSSIAN_SXY, GAUSSIAN_COMPAT = 3, 7
BILATERAL_SXY, BILATERAL_SRGB, BILATERAL_COMPAT = 50, 5, 10
MIN_IOU = 0.5  # a mask whose CRF version has a lower IoU with it is dropped
INSTALL_HINT = 'pip install "segkit[crf]" (builds pydensecrf2; needs a C++ compiler)'


@cache
def available() -> bool:
    """Whether pydensecrf can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Refined:
    """One mask through demo.py's CRF step (all (S, S) bool, the size of the squared image)."""

    crf_map: np.ndarray  # the CRF's labelling
    filled: np.ndarray  # with holes filled
    iou: float  # TokenCut's IoU(mask, filled); NaN when both are empty
    kept: bool  # not (iou < 0.5)

    @property
    def mask(self) -> np.ndarray:
        return self.filled if self.kept else np.zeros_like(self.filled)


def refine(square_rgb: np.ndarray, mask: np.ndarray) -> Refined:
    """CutLER's ``densecrf(I_new, mask) >= 0.5``, ``binary_fill_holes`` and the IoU >= 0.5 test.

    An empty mask (a rejected round) stays empty without running the CRF: its unaries favour the
    background everywhere and the Potts kernels only reward agreeing labels, so the CRF keeps them.
    """
    from scipy import ndimage

    if not mask.any():
        empty = np.zeros(mask.shape, dtype=bool)
        return Refined(crf_map=empty, filled=empty, iou=float("nan"), kept=True)
    crf_map = densecrf(square_rgb, mask)
    filled = ndimage.binary_fill_holes(crf_map)
    union = int((mask | filled).sum())
    iou = int((mask & filled).sum()) / union if union else float("nan")
    return Refined(crf_map=crf_map, filled=filled, iou=iou, kept=not iou < MIN_IOU)


def densecrf(square_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Two-label dense CRF with unaries -log softmax([1 - m, m]) and CutLER's kernels; the foreground."""
    import pydensecrf.densecrf as dcrf
    import torch
    from pydensecrf.utils import unary_from_softmax

    height, width = mask.shape
    foreground = mask.astype(np.float64)[None]
    logits = torch.from_numpy(np.concatenate((1 - foreground, foreground)))
    probabilities = torch.softmax(logits, dim=0).numpy()
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities)))
    crf.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_COMPAT)
    crf.addPairwiseBilateral(sxy=BILATERAL_SXY, srgb=BILATERAL_SRGB, rgbim=np.require(square_rgb, requirements=("C", "W")),
                             compat=BILATERAL_COMPAT)
    q = np.array(crf.inference(ITERATIONS)).reshape(2, height, width)
    return np.argmax(q, axis=0) == 1


def to_photo_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """demo.py's resize: the 0/255 mask with PIL's default filter (bicubic), then max/2 as threshold."""
    from PIL import Image

    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height)))
    upper, lower = resized.max(), resized.min()
    return np.where(resized > upper / 2.0, upper, lower) > 0
