"""CutLER (Wang et al., CVPR 2023): class-agnostic instance segmentation with the official
detectron2 checkpoints, run in plain PyTorch + torchvision (no detectron2).

``load(spec, weights=, config=, device=, dtype=)`` returns a :class:`CutLERSegmenter`; its
``predict(image, threshold=0.35, max_detections=None)`` gives an instance Result.
"""

from ...options import Option

TASKS = ("instance",)
CONFIG_HELP = "detectron2-style YAML config of the CutLER family (default: the model's built-in one)."
OPTIONS = (
    Option("threshold", "float", None, "Keep detections scoring above this (default: the model's, 0.35 as in "
           "CutLER's demo; replaces the config's SCORE_THRESH_TEST).", min=0, max=1),
    Option("max_detections", "int", None, "Keep at most this many detections per image (default: the "
           "config's TEST.DETECTIONS_PER_IMAGE).", min=1),
)


def load(spec, **kwargs):
    """Build and load a CutLER detector; see :func:`segmenter.load`."""
    from .segmenter import load as load_segmenter

    return load_segmenter(spec, **kwargs)
