"""CLIPSeg: zero-shot segmentation from text prompts or example-image prompts.

Runs transformers' ``CLIPSegForImageSegmentation`` with the same preprocessing and the same numbers
as its own forward pass, but without repeating work: each image is encoded once for all its prompts
(and only up to the deepest layer the decoder reads), each text prompt is embedded once per segmenter
(padded to the longest prompt, not to 77 tokens), and the decoder runs batched over prompts and images.
"""

from ...options import Option

TASKS = ("prompted",)
OPTIONS = (
    Option("prompts", "strs", (), "Text prompt (repeat for several).", flag="--prompt", short="-p"),
    Option("prompt_images", "any", (), "Example images to segment by (visual prompts): paths, arrays, "
           "or {label: image}.", cli=False),
    Option("threshold", "float", 0.4, "Heatmap threshold: a mask is heatmap > threshold.",
           min=0, max=1),
    Option("combine", "bool", False, "One label map: each pixel to the best prompt above the threshold."),
)


def load(spec, **kwargs):
    """Load a CLIPSeg model folder; see :func:`segmenter.load`."""
    from .segmenter import load as load_segmenter

    return load_segmenter(spec, **kwargs)
