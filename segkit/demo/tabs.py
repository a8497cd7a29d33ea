"""The demo's tabs, declared as data: one per backend, its controls built from the backend's OPTIONS.

A new backend gets a tab by adding one ``Tab`` to ``TABS``: its declared options become controls
(sliders, radios, check boxes, text boxes), its models.yaml selectors become radios, and the tab
appears once the backend is registered in ``segkit.registry.BACKENDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tab:
    """One backend's page.

    ``show`` lists declared options that the CLI sets itself (``cli=False``) but the page offers
    (OneFormer's task); ``hide`` keeps declared options off the page. ``save`` are the writer's
    outputs besides the overlay; ``figure`` names the extra image shown: "grid" (the writer's
    heatmap grid) or "map" (the segments opaque, as ``--alpha 1`` draws them, with a legend).
    """

    backend: str
    title: str
    intro: str
    show: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    labels: dict = field(default_factory=dict)
    save: tuple[str, ...] = ("labels", "json")
    figure: str | None = None
    opacity: bool = True


TABS = (
    Tab("oneformer", "OneFormer",
        "Universal segmentation: pick the task, the training set and the backbone, as in the OneFormer Space.",
        show=("task",), hide=("threshold", "label_set"), figure="map"),
    Tab("cutler", "CutLER", "Class-agnostic objects: every thing in the photo, without labels.",
        labels={"max_detections": "Most detections (blank: the config's)"}),
    Tab("clipseg", "CLIPSeg", "Zero-shot segmentation by text: one prompt per line.",
        labels={"prompts": "Prompts (one per line)", "combine": "One label map (each pixel to its best prompt)"},
        save=("labels", "json", "grid"), figure="grid"),
    Tab("maskcut", "MaskCut", "Unsupervised object masks by normalized cuts on self-supervised features.",
        labels={"tau": "Tau (affinity threshold)", "num_masks": "Number of masks", "crf": "CRF refinement",
                "fixed_size": "Fixed size"}),
)


def available_tabs() -> list[Tab]:
    """The tabs whose backend is registered and has a model declared."""
    from ..registry import BACKENDS, list_models

    return [tab for tab in TABS if tab.backend in BACKENDS and list_models(tab.backend)]
