"""What every backend shares: a loaded model that turns an image into a Result."""

from __future__ import annotations

import time

import numpy as np

from ..imageio import as_rgb_array
from ..options import Option, resolve_options
from ..registry import ModelSpec
from ..result import Result


class Segmenter:
    """A loaded model plus its pre/post-processing. Knows nothing of files or the CLI.

    Subclasses declare their predict keywords once in ``OPTIONS`` and implement
    ``_predict(rgb, **options)`` on a uint8 HxWx3 RGB array (or ``_predict_batch`` when they share
    work across images); they always receive every declared option, resolved and checked.
    """

    OPTIONS: tuple[Option, ...] = ()

    def __init__(self, spec: ModelSpec, model, device, dtype):
        self.spec = spec
        self.model = model
        self.device = device
        self.dtype = dtype
        self.source = {"model": spec.name}  # where the weights came from (segkit.load fills it in)

    @property
    def name(self) -> str:
        return self.spec.name

    def options(self, **given) -> dict:
        """The value of every option for a call with ``given``: checked, with models.yaml's and the
        declared defaults filled in (an OptionError names a bad or unknown one)."""
        return resolve_options(self.OPTIONS, given, self.spec.options, owner=self.name)

    def predict(self, image, **options) -> Result:
        """Segment one image (path, PIL image or uint8 RGB array)."""
        return self.predict_batch([image], **options)[0]

    def predict_batch(self, images, **options) -> list[Result]:
        """Segment several images; each result's ``total_s`` is its share of the batch's time."""
        used = self.options(**options)
        rgbs = [as_rgb_array(image) for image in images]
        if not rgbs:
            return []
        start = time.perf_counter()
        results = self._predict_batch(rgbs, **used)
        share = (time.perf_counter() - start) / len(rgbs)
        for rgb, result in zip(rgbs, results):
            result.meta.setdefault("timings", {})["total_s"] = share
            result.meta.setdefault("model", self.name)
            result.meta.setdefault("options", self.recorded_options(used))
            result.meta.setdefault("image_size", [int(rgb.shape[0]), int(rgb.shape[1])])
        return results

    def recorded_options(self, used: dict) -> dict:
        """The options as S.json records them (backends with non-JSON options override this)."""
        return dict(used)

    @property
    def batches(self) -> bool:
        """Whether the backend shares work across the images of a batch."""
        return type(self)._predict_batch is not Segmenter._predict_batch

    def _predict_batch(self, rgbs: list[np.ndarray], **options) -> list[Result]:
        """Backends that share work across images override this; the others only ``_predict``."""
        return [self._predict(rgb, **options) for rgb in rgbs]

    def _predict(self, rgb: np.ndarray, **options) -> Result:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device}, dtype={self.dtype})"
