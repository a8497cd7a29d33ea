"""OneFormer (Jain et al., CVPR 2023): one model, three tasks chosen by a task token.

The network is transformers' ``OneFormerForUniversalSegmentation``; the pre- and post-processing
are the original OneFormer's (``processing.py``); class names and colours are segkit's shipped
label sets (``segkit/labels/``), checked against the checkpoint's ``config.id2label`` on load.
"""

from ...options import Option

TASKS = ("semantic", "instance", "panoptic")
CONFIG_HELP = "A OneFormer config.json to use instead of the checkpoint's own."
OPTIONS = (
    Option("task", "str", "semantic", "What to segment: semantic, instance or panoptic.", choices=TASKS,
           cli=False),
    Option("threshold", "float", None, "Object-mask threshold: instances keep a class probability above it, "
           "panoptic keeps queries scoring above it (default: the dataset's value).", min=0, max=1),
    Option("label_set", "strs", None, "Keep only these class names (comma-separated or repeated).", separator=","),
)


def load(spec, **kwargs):
    """Load a OneFormer checkpoint folder; see :func:`segmenter.load`."""
    from .segmenter import load as load_segmenter

    return load_segmenter(spec, **kwargs)


def class_labels(spec, **kwargs):
    """The class labels a load would give, without loading the weights; see :func:`segmenter.class_labels`."""
    from .segmenter import class_labels as labels_of

    return labels_of(spec, **kwargs)
