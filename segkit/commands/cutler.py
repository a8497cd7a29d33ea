"""``segkit cutler``: class-agnostic objects with CutLER (no detectron2 needed)."""

from .images import image_command

command = image_command("cutler", "cutler", "Class-agnostic instance segmentation with CutLER (no detectron2 needed).")
