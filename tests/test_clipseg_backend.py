"""CLIPSeg backend: same numbers as transformers' CLIPSegForImageSegmentation, with the work shared."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segkit
from segkit.backends.clipseg import segmenter as clipseg
from segkit.errors import CheckpointError, ConfigError, SegkitError
from segkit.result import boxes_from_masks
from tiny_models import make_tiny_clipseg

PROMPTS = ["a cat", "grass", "a photo of the sky", "zebra"]  # "zebra" is not a vocabulary word: 5 tokens


@pytest.fixture(scope="module", params=[True, False], ids=["refined", "plain"])
def tiny(request, tmp_path_factory, tiny_clipseg):
    """(segmenter, reference model, reference processor) for a tiny CLIPSeg with and without the refined decoder."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    folder = tiny_clipseg if request.param else make_tiny_clipseg(tmp_path_factory.mktemp("clipseg"), refined=False)
    seg = segkit.load("clipseg", weights=folder, device="cpu")
    model = CLIPSegForImageSegmentation.from_pretrained(folder).eval()
    return seg, model, CLIPSegProcessor.from_pretrained(folder)


def photo(height=45, width=70, seed=0) -> np.ndarray:
    """A smooth-ish random RGB image (not square, not the model's input size)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 5 + 1, width // 5 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def reference_logits(model, processor, image: np.ndarray, prompts) -> torch.Tensor:
    """Logits exactly as the seed program computes them: one forward, the image repeated per prompt."""
    pil = Image.fromarray(image)
    inputs = processor(text=prompts, images=[pil] * len(prompts), padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs).logits


def reference_visual_logits(model, processor, image: np.ndarray, prompt_image: np.ndarray) -> torch.Tensor:
    inputs = processor(images=[Image.fromarray(image)], visual_prompt=[Image.fromarray(prompt_image)],
                       return_tensors="pt")
    with torch.inference_mode():
        return model(pixel_values=inputs["pixel_values"],
                     conditional_pixel_values=inputs["conditional_pixel_values"]).logits


def test_preprocessing_matches_processor_exactly(tiny):
    seg, _, processor = tiny
    images = [photo(), photo(64, 64, seed=1), photo(7, 300, seed=2)]
    expected = processor(images=[Image.fromarray(im) for im in images], return_tensors="pt").pixel_values
    assert torch.equal(seg._pixel_values(images), expected)


@pytest.mark.parametrize("prompts", [PROMPTS, ["grass"], ["a photo of the sky", "a cat"]])
def test_logits_match_transformers_per_image_and_prompt(tiny, prompts):
    seg, model, processor = tiny
    for seed in range(2):
        image = photo(seed=seed)
        expected = reference_logits(model, processor, image, prompts)
        assert expected.abs().max() > 1  # a realistic logit scale, so 1e-4 is a real tolerance
        torch.testing.assert_close(seg.logits(image, prompts), expected, atol=1e-4, rtol=0)


def test_real_photo_parity(tiny, examples_dir):
    seg, model, processor = tiny
    image = np.asarray(Image.open(examples_dir / "cat.jpg").convert("RGB"))
    torch.testing.assert_close(seg.logits(image, PROMPTS), reference_logits(model, processor, image, PROMPTS),
                               atol=1e-4, rtol=0)


def test_image_prompts_match_transformers_visual_prompt(tiny, tmp_path):
    seg, model, processor = tiny
    image, example = photo(seed=3), photo(30, 40, seed=4)
    path = tmp_path / "striped_thing.png"
    Image.fromarray(example).save(path)
    expected = reference_visual_logits(model, processor, image, example)
    for prompt_image in (path, str(path), example, Image.fromarray(example)):
        torch.testing.assert_close(seg.logits(image, prompt_images=[prompt_image]), expected, atol=1e-4, rtol=0)
    result = seg.predict(image, prompts=["grass"], prompt_images=[path, example, Image.fromarray(example)])
    assert result.labels == ["grass", "striped_thing", "image-2", "image-3"]
    mixed = seg.logits(image, ["grass"], [example])
    torch.testing.assert_close(mixed[1:], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(mixed[:1], reference_logits(model, processor, image, ["grass"]), atol=1e-4, rtol=0)


def test_predict_heatmaps_masks_scores_boxes(tiny):
    seg, model, processor = tiny
    image = photo(seed=5)
    result = seg.predict(image, prompts=PROMPTS)
    expected = F.interpolate(torch.sigmoid(reference_logits(model, processor, image, PROMPTS))[None],
                             size=image.shape[:2], mode="bilinear", align_corners=False)[0].numpy()
    assert result.kind == "prompted"
    assert result.labels == PROMPTS and result.class_names == PROMPTS
    assert result.heatmaps.shape == (4, 45, 70) and result.heatmaps.dtype == np.float32
    np.testing.assert_allclose(result.heatmaps, expected, atol=1e-5)
    assert result.meta["options"]["threshold"] == 0.4  # models.yaml's option
    np.testing.assert_array_equal(result.masks, result.heatmaps > 0.4)
    assert 0 < result.masks.mean() < 1  # the threshold actually splits the heatmaps
    np.testing.assert_allclose(result.scores, expected.max(axis=(1, 2)), atol=1e-5)
    np.testing.assert_array_equal(result.boxes, boxes_from_masks(result.masks))
    np.testing.assert_array_equal(result.class_ids, np.arange(4))
    assert result.label_map is None
    assert {"preprocess_s", "encode_prompts_s", "encode_images_s", "decode_s", "postprocess_s",
            "total_s"} <= set(result.meta["timings"])
    cut = float(np.sort(result.heatmaps, axis=None)[result.heatmaps.size // 2])  # a value some pixel has
    strict = seg.predict(image, prompts=PROMPTS, threshold=cut)
    np.testing.assert_array_equal(strict.masks, result.heatmaps > cut)  # strictly above: that pixel is out


def test_one_prompt_keeps_its_axis(tiny):
    seg, _, _ = tiny
    result = seg.predict(photo(), prompts="grass")
    assert result.masks.shape == result.heatmaps.shape == (1, 45, 70)
    assert result.labels == ["grass"] and result.scores.shape == (1,) and result.boxes.shape == (1, 4)


def test_combine_label_map(tiny):
    seg, _, _ = tiny
    image = photo(seed=6)
    for threshold in (0.4, 0.8):
        result = seg.predict(image, prompts=PROMPTS, threshold=threshold, combine=True)
        heat = result.heatmaps
        for y, x in [(0, 0), (10, 20), (44, 69), (30, 5)]:
            values = heat[:, y, x]
            expected = 1 + int(np.argmax(values)) if values.max() > threshold else 0
            assert result.label_map[y, x] == expected
        assert result.label_map.dtype == np.int32
        assert set(np.unique(result.label_map)) <= set(range(len(PROMPTS) + 1))
        np.testing.assert_array_equal(result.label_map > 0, result.masks.any(axis=0))
        for i, mask in enumerate(result.masks):  # the masks are the partition, drawn as one map
            np.testing.assert_array_equal(mask, result.label_map == i + 1)


def test_predict_batch_equals_predict(tiny, monkeypatch):
    seg, _, _ = tiny
    images = [photo(seed=7), photo(80, 33, seed=8), Image.fromarray(photo(seed=9))]
    monkeypatch.setattr(clipseg, "DECODER_PAIRS", 5)  # 12 (image, prompt) pairs: decoder chunks of 5, 5, 2
    monkeypatch.setattr(clipseg, "MLP_CHUNK_BYTES", 1)  # every MLP one sample at a time
    batch = seg.predict_batch(images, prompts=PROMPTS, combine=True)
    monkeypatch.undo()
    assert len(batch) == 3 and seg.predict_batch([], prompts=PROMPTS) == []
    for image, result in zip(images, batch):
        single = seg.predict(image, prompts=PROMPTS, combine=True)
        np.testing.assert_allclose(result.heatmaps, single.heatmaps, atol=1e-5)
        assert result.meta["image_size"] == list(single.heatmaps.shape[1:])
        assert result.meta["timings"]["total_s"] > 0


def test_each_image_encoded_once_without_unused_layers(tiny):
    seg, _, _ = tiny
    layers = seg.model.clip.vision_model.encoder.layers
    calls = {"first": [], "last": []}
    hooks = [layers[0].self_attn.register_forward_hook(lambda m, args, out: calls["first"].append(len(args[0]))),
             layers[-1].self_attn.register_forward_hook(lambda m, args, out: calls["last"].append(len(args[0])))]
    try:
        seg.predict(photo(), prompts=PROMPTS)
        seg.predict_batch([photo(seed=1), photo(seed=2), photo(seed=3)], prompts=PROMPTS)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["first"] == [1, 3]  # one pass per call, the whole batch at once
    assert calls["last"] == []  # tiny model: features come from layers 1 and 2 of 4


def test_text_embedded_once_per_prompt_and_not_padded_to_77(tiny, monkeypatch):
    seg, model, processor = tiny
    seg._prompt_cache.clear()
    seen = []
    original = seg.model.clip.get_text_features

    def spy(input_ids, **kwargs):
        seen.append(input_ids.shape)
        return original(input_ids, **kwargs)

    monkeypatch.setattr(seg.model.clip, "get_text_features", spy)
    seg.predict_batch([photo(), photo(seed=1)], prompts=PROMPTS)
    seg.predict(photo(seed=2), prompts=PROMPTS)
    logits = seg.logits(photo(seed=3), ["grass", "a dog"])
    longest = max(len(processor.tokenizer(p).input_ids) for p in PROMPTS)
    assert seen == [(4, longest), (1, 4)]  # "a dog": start, a, dog, end
    torch.testing.assert_close(logits, reference_logits(model, processor, photo(seed=3), ["grass", "a dog"]),
                               atol=1e-4, rtol=0)


def test_bfloat16_runs_close_to_float32(tiny):
    seg, _, _ = tiny
    half = segkit.load("clipseg", weights=seg.model.name_or_path, device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    image = photo(seed=10)
    result = half.predict(image, prompts=PROMPTS)
    assert result.heatmaps.dtype == np.float32
    error = np.abs(result.heatmaps - seg.predict(image, prompts=PROMPTS).heatmaps)
    assert error.mean() < 0.01 and error.max() < 0.2


def test_no_prompt_is_an_error(tiny):
    seg, _, _ = tiny
    with pytest.raises(SegkitError, match="at least one prompt"):
        seg.predict(photo())


def test_bad_weights_give_one_line_errors(tmp_path, tiny):
    seg, _, _ = tiny
    single_file = tmp_path / "model.safetensors"
    single_file.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="must be a model folder"):
        segkit.load("clipseg", weights=single_file, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a loadable CLIPSeg model folder") as info:
        segkit.load("clipseg", weights=empty, device="cpu")
    assert "\n" not in str(info.value) and str(empty) in str(info.value)
    with pytest.raises(ConfigError):
        segkit.load("clipseg", weights=seg.model.name_or_path, config="x.yaml", device="cpu")
