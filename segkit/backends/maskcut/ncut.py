"""MaskCut's normalized-cut rounds, as CutLER's ``maskcut_forward`` computes them.

Each round cuts the patch graph (affinity 1 where the keys' cosine exceeds ``tau``, else 1e-5) with
the second-smallest generalized eigenvector of (D - A) v = lambda D v, keeps the 4-connected
component holding the seed, and zeroes those patches' keys for the next round. The numbers follow
CutLER's: round 1 in float32, later rounds in float64 (CutLER's float64 painting mask promotes the
keys), and ``scipy.linalg.eigh`` called as CutLER calls it, because for some graphs the sign LAPACK
gives the eigenvector decides which side is the object.

Less work than CutLER, same numbers: the float64 cosines are computed once (zeroing a patch's keys
only zeroes its row and column), and a rejected round leaves the graph unchanged, so the next round
reuses its cut instead of solving the same eigenproblem again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEAK_AFFINITY = 1e-5  # CutLER's eps for patch pairs below tau
MAX_OVERLAP = 0.5  # a later round whose mask has IoU above this with the previous one is rejected
MIN_AREA_RATIO = 0.01  # ... and so is one covering at most this fraction of the patches


@dataclass(frozen=True)
class Cut:
    """One bipartition of the patch graph (patch index p = i * w + j)."""

    eigvals: np.ndarray  # (2,) the 2nd and 3rd smallest generalized eigenvalues
    eigvec: np.ndarray  # (h*w,) the 2nd smallest eigenvector, as eigh returned it
    bipartition_raw: np.ndarray  # (h, w) eigvec > mean(eigvec)
    corners: int  # corner patches in bipartition_raw
    seed_abs: int  # argmax |eigvec|
    reversed: bool  # foreground is the other side (>= 3 corners, or the peak is not in it)
    bipartition_fg: np.ndarray  # (h, w)
    seed: int  # the foreground's peak patch
    component: np.ndarray  # (h, w) 4-connected component of the foreground holding the seed


@dataclass(frozen=True)
class Round:
    """One MaskCut round: its cut, and whether its component became a mask."""

    cut: Cut
    painting: np.ndarray  # (h, w) patches zeroed before this round (earlier masks)
    iou_prev: float  # IoU with the previous round's mask (NaN in round 1 or when both are empty)
    ratio: float  # component area / number of patches
    rejected: bool
    mask: np.ndarray  # (h, w) the component, or empty when rejected


def ncut_rounds(keys, grid: tuple[int, int], tau: float, num_masks: int) -> list[Round]:
    """``num_masks`` rounds on the keys (C, h*w torch tensor), as ``maskcut_forward`` runs them."""
    import torch

    h, w = grid
    if h != w:  # CutLER's masking reshapes the keys to (C, h, h)
        raise ValueError(f"MaskCut needs a square patch grid, not {h}x{w}")
    painting = np.zeros((h, w), dtype=bool)
    cosines64 = None  # one float64 cosine matrix serves every round after the first
    rounds: list[Round] = []
    for index in range(num_masks):
        if index:
            painting = painting | rounds[-1].mask
        if index >= 2 and np.array_equal(painting, rounds[-1].painting):
            cut = rounds[-1].cut  # the previous round was rejected: same graph, same cut
        elif index == 0:
            cut = _cut(_cosines(keys, torch.float32), painting, tau, grid)
        else:
            cosines64 = _cosines(keys, torch.float64) if cosines64 is None else cosines64
            cut = _cut(cosines64, painting, tau, grid)
        rounds.append(_judge(cut, painting, rounds[-1].mask if rounds else None))
    return rounds


def image_masks(rounds: list[Round], size: int) -> np.ndarray:
    """``maskcut()``'s output: each round's mask upsampled (nearest) to ``size`` x ``size``, minus the
    earlier ones, so the masks are disjoint and in round order. (N, size, size) bool."""
    import torch
    from torch.nn import functional as F

    if not rounds:
        return np.zeros((0, size, size), dtype=bool)
    masks = torch.from_numpy(np.stack([r.mask for r in rounds]).astype(np.float64))[:, None]
    upsampled = F.interpolate(masks, size=(size, size), mode="nearest")[:, 0].numpy() > 0.5
    taken = np.zeros((size, size), dtype=bool)
    for mask in upsampled:
        mask &= ~taken
        taken |= mask
    return upsampled


def _cosines(keys, dtype) -> np.ndarray:
    """Patch-by-patch cosine similarity of the keys in ``dtype``, on the keys' device, as a numpy array."""
    from torch.nn import functional as F

    unit = F.normalize(keys.to(dtype), p=2, dim=0)
    return (unit.T @ unit).cpu().numpy()


def _cut(cosines: np.ndarray, painting: np.ndarray, tau: float, grid: tuple[int, int]) -> Cut:
    """The bipartition of the graph whose painted patches have all-zero keys (cosine 0 with everything)."""
    from scipy import ndimage
    from scipy.linalg import eigh

    h, w = grid
    laplacian = np.where(cosines > tau, 1.0, WEAK_AFFINITY)  # A; ``tau`` compared in the cosines' dtype
    painted = painting.reshape(-1)
    if painted.any():
        zeroed = 1.0 if 0.0 > tau else WEAK_AFFINITY
        laplacian[painted, :] = zeroed
        laplacian[:, painted] = zeroed
    degree = np.sum(laplacian, axis=1)
    np.negative(laplacian, out=laplacian)
    diagonal = np.arange(len(degree))
    laplacian[diagonal, diagonal] += degree  # D - A, the same numbers as CutLER's
    degrees = np.zeros(laplacian.shape, order="F")  # Fortran order: LAPACK reads it without a copy
    degrees[diagonal, diagonal] = degree
    eigvals, eigvecs = eigh(laplacian, degrees, subset_by_index=[1, 2], check_finite=False,
                            overwrite_a=True, overwrite_b=True)
    eigvec = np.array(eigvecs[:, 0])
    raw = eigvec > np.sum(eigvec) / len(eigvec)
    seed_abs = int(np.argmax(np.abs(eigvec)))
    raw_grid = raw.reshape(h, w)
    corners = int(raw_grid[0, 0]) + int(raw_grid[0, -1]) + int(raw_grid[-1, 0]) + int(raw_grid[-1, -1])
    flip = corners >= 3 or not raw[seed_abs]
    foreground = ~raw_grid if flip else raw_grid
    seed = int(np.argmax(-eigvec if flip else eigvec))
    labels, _ = ndimage.label(foreground)
    component = labels == labels[np.unravel_index(seed, (h, w))]
    return Cut(eigvals=eigvals, eigvec=eigvec, bipartition_raw=raw_grid, corners=corners, seed_abs=seed_abs,
               reversed=bool(flip), bipartition_fg=foreground, seed=seed, component=component)


def _judge(cut: Cut, painting: np.ndarray, previous: np.ndarray | None) -> Round:
    """Round >= 2 rejects a component that mostly repeats the previous round's mask or is tiny."""
    component = cut.component
    h, w = component.shape
    ratio = int(component.sum()) / h / w
    iou = float("nan")
    rejected = False
    if previous is not None:
        union = int((previous | component).sum())
        iou = int((previous & component).sum()) / union if union else float("nan")
        rejected = iou > MAX_OVERLAP or ratio <= MIN_AREA_RATIO
    mask = np.zeros_like(component) if rejected else component
    return Round(cut=cut, painting=painting, iou_prev=iou, ratio=ratio, rejected=rejected, mask=mask)
