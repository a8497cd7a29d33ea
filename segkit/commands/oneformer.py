"""``segkit semantic | instance | panoptic``: OneFormer's three tasks, one command each."""

from .images import image_command


def _task_command(task: str, doc: str):
    return image_command("oneformer", task, doc, fixed={"task": task},
                         hide=("threshold",) if task == "semantic" else ())


semantic = _task_command("semantic", "Semantic segmentation with OneFormer: a class for every pixel.")
instance = _task_command("instance", "Instance segmentation with OneFormer: one mask per object.")
panoptic = _task_command("panoptic", "Panoptic segmentation with OneFormer: objects and stuff, every pixel once.")
