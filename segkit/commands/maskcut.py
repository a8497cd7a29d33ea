"""``segkit maskcut``: training-free object discovery (DINO + normalized cuts), e.g. for pseudo-labels."""

from .images import image_command

command = image_command(
    "maskcut", "maskcut",
    "Class-agnostic objects with MaskCut: no trained detector, any photo (DINO + normalized cuts).\n\n"
    "With --coco FILE the batch becomes one COCO dataset file of pseudo-labels, as CutLER's maskcut.py writes.")
