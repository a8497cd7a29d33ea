"""MaskCut against CutLER's own outputs (tests/fixtures/maskcut), one step at a time, then end to end.

Layers: pixels from the PNG; keys with DINO's interpolation (``keys_dino``); NCut from the stored
``keys`` (every round's fields) and from ``keys_dino`` (``masks_dino_keys``); demo.py's CRF step; and
``predict`` end to end through ``segkit.load`` with the fixture's tiny DINO-style ViT.
"""

import hashlib
import json
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

import segkit
from segkit.backends.maskcut import segmenter as maskcut
from segkit.backends.maskcut import crf, ncut, preprocess
from segkit.errors import CheckpointError, ConfigError, OptionError
from segkit.imageio import read_image
from segkit.registry import get_spec
from system import missing

FIXTURES = Path(__file__).parent / "fixtures" / "maskcut"
CASES = ("a1_astronaut", "a2_cat", "a3_coffee", "a4_rocket")
SMALL_CASES = CASES[1:]  # 20x20 / 18x18 patch grids; a1 (60x60, CutLER's defaults) is the slow one


@cache
def meta() -> dict:
    return json.loads((FIXTURES / "meta.json").read_text())


@cache
def case(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz") as data:
        arrays = dict(data)
    return {**meta()["cases"][name], **arrays}  # the arrays, where both name a field


def settings(name: str) -> dict:
    c = case(name)
    return {"tau": c["tau"], "num_masks": c["N"], "fixed_size": c["fixed_size"]}


def require_crf():
    """CRF tests run wherever pydensecrf is installed; CI installs it, so there its absence fails."""
    if not crf.available():
        missing('pydensecrf is not installed (pip install "segkit[crf]")')


@pytest.fixture(scope="module")
def segmenter():
    return segkit.load("maskcut", weights=FIXTURES / "model", device="cpu")


@cache
def rounds_from(name: str, field: str):
    c = case(name)
    return ncut.ncut_rounds(torch.from_numpy(c[field]), tuple(c["feat_hw"]), c["tau"], c["N"])


def photo_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """demo.py's resize of each (S, S) mask to the photo, empty ones dropped (as segkit returns them)."""
    resized = [crf.to_photo_size(m, height, width) for m in masks]
    return np.array([m for m in resized if m.any()], dtype=bool).reshape(-1, height, width)


def test_fixture_files_are_intact():
    for name, digest in meta()["files_sha256"].items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", CASES)
def test_preprocessing_matches_cutler(name):
    c = case(name)
    rgb = read_image(FIXTURES / f"{name}.png")
    np.testing.assert_array_equal(rgb, c["image_rgb"])
    square = preprocess.square_resize(rgb, c["fixed_size"])
    np.testing.assert_array_equal(square, c["resized_rgb"])
    model_input = preprocess.model_input(square, 8)
    np.testing.assert_array_equal(model_input, c["model_input_rgb"])
    np.testing.assert_allclose(preprocess.pixel_values(model_input).numpy(), c["pixel_values"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_keys_follow_dinos_interpolation(segmenter, name):
    """Fused attention moves the keys by ~1e-5 (|keys| up to 14); transformers' own interpolation
    would move them by 0.6-2.7 at these sizes."""
    c = case(name)
    keys, grid = segmenter.keys(c["resized_rgb"])
    assert grid == tuple(c["feat_hw"])
    np.testing.assert_allclose(keys.numpy(), c["keys_dino"], rtol=0, atol=1e-4)
    assert np.abs(c["keys"] - c["keys_dino"]).max() > 0.5  # the fixture tells the two rules apart


def test_layer_norm_eps_is_dinos_not_the_hub_configs(segmenter):
    assert json.loads((FIXTURES / "model" / "config.json").read_text())["layer_norm_eps"] == 1e-6
    assert all(layer.layernorm_before.eps == 1e-6 for layer in segmenter.model.layers)


@pytest.mark.parametrize("name", CASES)
def test_ncut_from_stored_keys_reproduces_every_round(name):
    c = case(name)
    rounds = rounds_from(name, "keys")
    assert len(rounds) == c["N"]
    for i, r in enumerate(rounds):
        cut = r.cut
        np.testing.assert_allclose(cut.eigvals, c["eigvals"][i], rtol=0, atol=1e-10)
        np.testing.assert_allclose(cut.eigvec, c["eigvec"][i], rtol=0, atol=1e-10)
        np.testing.assert_array_equal(cut.bipartition_raw, c["bipartition_raw"][i])
        assert cut.corners == c["nc"][i]
        assert cut.reversed == c["reversed"][i]
        # the seeds are argmaxes: patches whose eigvec entries tie to 1e-15 may trade places
        reference = c["eigvec"][i]
        assert abs(abs(reference[cut.seed_abs]) - np.abs(reference).max()) < 1e-12
        signed = -reference if cut.reversed else reference
        assert abs(signed[cut.seed] - signed.max()) < 1e-12
        np.testing.assert_array_equal(cut.bipartition_fg, c["bipartition_fg"][i])
        np.testing.assert_array_equal(cut.component, c["component"][i])
        np.testing.assert_array_equal(r.painting, c["painting"][i])
        np.testing.assert_allclose(r.iou_prev, c["iou_prev"][i], rtol=0, atol=1e-6, equal_nan=True)
        assert r.ratio == pytest.approx(c["ratio"][i], abs=1e-12)
        assert r.rejected == c["rejected"][i]
        np.testing.assert_array_equal(r.mask, c["masks_feat"][i])
    np.testing.assert_array_equal(ncut.image_masks(rounds, c["fixed_size"]), c["masks"])


def test_a_rejected_round_leaves_the_graph_and_its_cut_unchanged():
    rounds = rounds_from("a3_coffee", "keys")
    assert rounds[1].rejected and not rounds[2].rejected
    assert rounds[2].cut is rounds[1].cut  # not solved again
    assert case("a3_coffee")["rejected_by"] == ["none", "overlap", "none"]
    assert case("a4_rocket")["rejected_by"][2] == "small" and rounds_from("a4_rocket", "keys")[2].rejected


@pytest.mark.parametrize("name", SMALL_CASES)
def test_ncut_from_dino_keys_gives_maskcuts_masks(name):
    c = case(name)
    rounds = rounds_from(name, "keys_dino")
    np.testing.assert_array_equal(np.array([r.mask for r in rounds]), c["masks_feat_dino_keys"])
    np.testing.assert_array_equal(ncut.image_masks(rounds, c["fixed_size"]), c["masks_dino_keys"])


@pytest.mark.parametrize("name", CASES)
def test_crf_step_reproduces_demo(name):
    require_crf()
    c = case(name)
    height, width = c["image_rgb"].shape[:2]
    for i, mask in enumerate(c["masks"]):
        refined = crf.refine(c["resized_rgb"], mask)
        np.testing.assert_array_equal(refined.crf_map, c["crf_map"][i])
        np.testing.assert_array_equal(refined.filled, c["crf_filled"][i])
        np.testing.assert_allclose(refined.iou, c["crf_iou"][i], rtol=0, atol=1e-6, equal_nan=True)
        assert refined.kept == c["crf_kept"][i]
        np.testing.assert_array_equal(crf.to_photo_size(refined.mask, height, width), c["final_masks"][i])
    # refine() skips the CRF for empty masks: the CRF itself keeps them empty
    assert not crf.densecrf(c["resized_rgb"], np.zeros(c["masks"].shape[1:], dtype=bool)).any()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("name", CASES)
def test_predict_without_crf_matches_maskcut(segmenter, name):
    """IoU >= 0.99, not equality: fused attention moves a few of a1's cosines (within 1e-7 of tau) across it."""
    c = case(name)
    result = segmenter.predict(FIXTURES / f"{name}.png", crf=False, **settings(name))
    height, width = c["image_rgb"].shape[:2]
    expected = photo_masks(c["masks_dino_keys"], height, width)
    assert result.masks.shape == expected.shape
    for mine, theirs in zip(result.masks, expected):
        assert iou(mine, theirs) >= 0.99
    assert result.kind == "instance"
    assert result.labels == ["object"] * len(expected) and result.class_names == ["object"]
    np.testing.assert_array_equal(result.scores, 1.0)
    np.testing.assert_array_equal(result.class_ids, 0)
    for mask, (x1, y1, x2, y2) in zip(result.masks, result.boxes.astype(int)):
        ys, xs = np.nonzero(mask)
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert result.meta["crf"] is False
    assert result.meta["options"] == {**settings(name), "crf": False}
    assert {"vit_s", "ncut_s", "total_s"} <= set(result.meta["timings"])


def test_predict_with_crf_matches_demo_end_to_end(segmenter):
    """a3_coffee: the one case whose masks are the same from transformers' and DINO's keys, so the
    fixture's CRF output is also MaskCut's."""
    require_crf()
    c = case("a3_coffee")
    assert c["masks_same_with_dino_keys"]
    result = segmenter.predict(c["image_rgb"], crf=True, **settings("a3_coffee"))
    expected = c["final_masks"][[m.any() for m in c["final_masks"]]]
    assert len(expected) == 1
    np.testing.assert_array_equal(result.masks, expected)
    assert result.meta["crf"] is True and result.meta["options"]["crf"] is True
    assert "crf_s" in result.meta["timings"]


def test_crf_default_follows_pydensecrf(segmenter, monkeypatch):
    monkeypatch.setattr(crf, "available", lambda: False)
    monkeypatch.setattr(maskcut, "_crf_warning_shown", False)
    image = case("a2_cat")["image_rgb"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = segmenter.predict(image, fixed_size=32)
        second = segmenter.predict(image, fixed_size=32)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and 'pip install "segkit[crf]"' in messages[0] and "\n" not in messages[0]
    assert first.meta["crf"] is False and second.meta["options"]["crf"] is False
    with pytest.raises(OptionError, match=r"segkit\[crf\]"):
        segmenter.predict(image, fixed_size=32, crf=True)
    monkeypatch.setattr(crf, "available", lambda: True)
    assert segmenter.options()["crf"] is True


def test_options_are_checked(segmenter):
    image = case("a2_cat")["image_rgb"]
    for bad in ({"tau": 1.5}, {"num_masks": 0}, {"num_masks": 1.5}, {"fixed_size": 8}, {"fixed_size": 5000},
                {"crf": "yes"}, {"threshold": 0.3}):
        with pytest.raises(OptionError):
            segmenter.predict(image, **bad)
    assert segmenter.options(crf=False) == {"tau": 0.15, "num_masks": 3, "fixed_size": 480, "crf": False}
    assert "(side/8)^4" in next(o.help for o in segmenter.OPTIONS if o.name == "fixed_size")


def test_models_are_declared():
    spec = get_spec("maskcut")
    assert spec.name == "maskcut-dino-vitb8" and spec.weights["hub"] == "facebook/dino-vitb8"
    assert get_spec("maskcut-dino-vits8").weights["hub"] == "facebook/dino-vits8"
    for name in ("maskcut-dino-vitb8", "maskcut-dino-vits8"):
        assert get_spec(name).options == {"tau": 0.15, "num_masks": 3, "fixed_size": 480}
        assert get_spec(name).tasks == ("instance",)


def test_loads_hub_named_weights_through_segkit(segmenter):
    from safetensors.numpy import load_file

    stored = load_file(FIXTURES / "model" / "model.safetensors")
    key = "encoder.layer.2.attention.attention.key.weight"
    np.testing.assert_array_equal(segmenter.model.layers[2].attention.k_proj.weight.detach().numpy(), stored[key])
    assert segmenter.model.config._attn_implementation == "sdpa"
    assert segmenter.name == "maskcut-dino-vitb8"


def test_wrong_weights_are_refused_in_one_line(tmp_path):
    from safetensors.numpy import load_file, save_file

    def refused(weights, match):
        with pytest.raises(CheckpointError, match=match) as error:
            segkit.load("maskcut", weights=weights, device="cpu")
        assert "\n" not in str(error.value)

    refused(FIXTURES / "model" / "model.safetensors", "not a single file")
    no_config = tmp_path / "empty"
    no_config.mkdir()
    refused(no_config, "no readable config.json")
    not_vit = tmp_path / "clip"
    not_vit.mkdir()
    (not_vit / "config.json").write_text(json.dumps({"model_type": "clip"}))
    refused(not_vit, "model_type 'clip', not 'vit'")

    tensors = load_file(FIXTURES / "model" / "model.safetensors")
    config = (FIXTURES / "model" / "config.json").read_text()
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text(config)
    save_file({k: v for k, v in tensors.items() if k != "encoder.layer.1.output.dense.bias"},
              missing / "model.safetensors")
    refused(missing, r"1 missing \(e\.g\. (layers\.1\.mlp\.fc2|encoder\.layer\.1\.output\.dense)\.bias\)")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "config.json").write_text(config)
    save_file({**tensors, "decoder.weight": np.zeros(3, np.float32)}, extra / "model.safetensors")
    refused(extra, r"1 unexpected \(e\.g\. decoder\.weight\)")
    shaped = tmp_path / "shaped"
    shaped.mkdir()
    (shaped / "config.json").write_text(config)
    save_file({**tensors, "encoder.layer.0.attention.attention.key.weight": np.zeros((48, 40), np.float32)},
              shaped / "model.safetensors")
    refused(shaped, r"1 of the wrong shape \(e\.g\. .*0\.attention\.")
    with pytest.raises(ConfigError):
        segkit.load("maskcut", weights=FIXTURES / "model", config="x.yaml", device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_masks(segmenter):
    cuda = segkit.load("maskcut", weights=FIXTURES / "model", device="cuda")
    for name in SMALL_CASES:
        image = case(name)["image_rgb"]
        np.testing.assert_array_equal(cuda.predict(image, crf=False, **settings(name)).masks,
                                      segmenter.predict(image, crf=False, **settings(name)).masks)
