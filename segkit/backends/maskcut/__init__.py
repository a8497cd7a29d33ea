"""MaskCut (Wang et al., CVPR 2023): CutLER's training-free object discovery with a self-supervised
DINO ViT and normalized cuts, computing what CutLER's ``maskcut.py`` / ``demo.py`` compute.

``load(spec, weights=, device=)`` takes any folder ``transformers.ViTModel`` reads (the hub's
facebook/dino-vit*); ``predict(image, tau=0.15, num_masks=3, fixed_size=480, crf=None)`` gives an
instance Result: one class-agnostic "object" per accepted round, score 1.0 (MaskCut has no confidence).
"""

from ...options import Option

TASKS = ("instance",)
OPTIONS = (
    Option("tau", "float", 0.15, "Affinity threshold: two patches are linked when the cosine of their "
           "keys exceeds it (CutLER's demo uses 0.15).", min=-1, max=1),
    Option("num_masks", "int", 3, "NCut rounds, so at most this many objects per image.", min=1, max=100),
    Option("fixed_size", "int", 480, "Side of the square the photo is resized to (aspect ratio not kept). "
           "The affinity matrix has (side/8)^4 entries: 480 px gives 3600x3600 (100 MB per float64 "
           "copy, about 0.4 GB at the peak); doubling the side costs 16x the memory and about 64x the "
           "time of the eigensolves.", min=16, max=1024),
    Option("crf", "bool", None, "Refine each mask with CutLER's dense CRF (default: on when pydensecrf "
           'is installed; pip install "segkit[crf]").'),
)


def load(spec, **kwargs):
    """Load a DINO ViT folder; see :func:`segmenter.load`."""
    from .segmenter import load as load_segmenter

    return load_segmenter(spec, **kwargs)
