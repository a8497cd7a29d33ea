"""What every backend shares: a loaded model that turns an image into a Result."""

from __future__ import annotations

import time

import numpy as np

from ..imageio import as_rgb_array
from ..registry import ModelSpec
from ..result import Result


class Segmenter:
    """A loaded model plus its pre/post-processing. Knows nothing of files or the CLI.

    Subclasses implement ``_predict(rgb, **options)`` on a uint8 HxWx3 RGB array.
    """

    def __init__(self, spec: ModelSpec, model, device, dtype):
        self.spec = spec
        self.model = model
        self.device = device
        self.dtype = dtype

    @property
    def name(self) -> str:
        return self.spec.name

    def predict(self, image, **options) -> Result:
        """Segment one image (path, PIL image or uint8 RGB array)."""
        rgb = as_rgb_array(image)
        start = time.perf_counter()
        result = self._predict(rgb, **options)
        result.meta.setdefault("timings", {})["total_s"] = time.perf_counter() - start
        result.meta.setdefault("model", self.name)
        result.meta.setdefault("image_size", [int(rgb.shape[0]), int(rgb.shape[1])])
        return result

    def predict_batch(self, images, **options) -> list[Result]:
        """Segment several images; backends override this where batching shares work."""
        return [self.predict(image, **options) for image in images]

    def _predict(self, rgb: np.ndarray, **options) -> Result:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device}, dtype={self.dtype})"
