"""The shipped label sets: counts, thing flags, colours and name matching."""

import numpy as np
import pytest

from segkit.labels import LabelSet, available, load_labels


@pytest.mark.parametrize("name,classes,things", [("coco_panoptic", 133, 80), ("ade20k_150", 150, 100),
                                                  ("cityscapes_19", 19, 8)])
def test_shipped_sets(name, classes, things):
    labels = load_labels(name)
    assert len(labels) == classes and int(labels.isthing.sum()) == things
    assert labels.colors.shape == (classes, 3) and labels.colors.dtype == np.uint8
    assert name in available()


def test_names_match_with_synonyms_case_and_spacing():
    ade = load_labels("ade20k_150")
    assert ade.names[8] == "window " and ade.matches(8, "Window") and ade.matches(8, "windowpane")
    assert ade.resolve(["road"]) == [6] and ade.resolve(["ROAD, ROUTE", "person"]) == [6, 12]
    assert ade.thing_index[8] == 1 and ade.thing_index[0] == -1
    coco = load_labels("coco_panoptic")
    assert coco.thing_index is None and coco.resolve(["Wall-Other-Merged"]) == [131]
    with pytest.raises(KeyError):
        coco.resolve(["person", "unicorn"])


def test_label_set_from_names_has_only_things():
    labels = LabelSet.from_names("toy", ["a", "b"])
    assert labels.isthing.tolist() == [True, True] and labels.colors is None and labels.resolve(["B"]) == [1]
