"""Scoring saved predictions against COCO-format ground truth with the field's own metrics.

One module per metric, each a set of plain functions that return the metric's section of
``metrics.json`` as a dict: ``instance`` (mask/box AP, pycocotools), ``panoptic`` (PQ, panopticapi's
rules), ``semantic`` (mIoU, detectron2's SemSegEvaluator). ``report`` writes them as JSON or a table.
"""
