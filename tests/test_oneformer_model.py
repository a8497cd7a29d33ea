"""OneFormer through segkit's loader: a tiny Swin OneFormer saved with save_pretrained, then loaded."""

import dataclasses
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch

import segkit
from segkit.backends import oneformer
from segkit.backends.oneformer.processing import preprocess
from segkit.backends.oneformer.tasks import TASKS, shipped_ids, task_text, task_token_ids
from segkit.errors import CheckpointError, OptionError
from segkit.imageio import read_image
from segkit.labels import load_labels
from segkit.registry import get_spec
from segkit.result import boxes_from_masks
from system import missing
from tiny_models import tiny_oneformer, write_clip_vocab

COCO = load_labels("coco_panoptic")


def small_spec(name="oneformer-coco-swin-l"):
    """The registered spec with a small test size, so the tiny model runs fast."""
    spec = get_spec(name)
    return dataclasses.replace(spec, options={**spec.options, "min_size_test": 128, "max_size_test": 213})


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oneformer_swin")
    tiny_oneformer(COCO.names, seed=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def segmenter(tiny_folder):
    return oneformer.load(small_spec(), weights=tiny_folder, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:150, 0:190]
    rgb = np.stack([(x * 1.3) % 256, (y * 1.7) % 256, (x + y) % 256], -1) + rng.integers(0, 30, (150, 190, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_segkit_load_gives_transformers_model_with_its_logits(tiny_folder, examples_dir):
    from transformers import OneFormerForUniversalSegmentation

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the label set fits: no warning
        seg = segkit.load("oneformer-coco-swin-l", weights=tiny_folder, device="cpu")
    assert type(seg.model) is OneFormerForUniversalSegmentation
    assert seg.class_names == list(COCO.names)
    seen = {}
    seg.model.register_forward_hook(lambda module, args, kwargs, out: seen.update(kwargs=kwargs, out=out),
                                    with_kwargs=True)
    rgb = read_image(examples_dir / "cat.jpg")
    result = seg.predict(rgb, task="panoptic")
    assert result.meta["resized_size"] == [800, 1203] and result.meta["padded_size"] == [800, 1216]

    reference = OneFormerForUniversalSegmentation.from_pretrained(tiny_folder).eval()
    pixels, _ = preprocess(rgb, 800, 1333, 32)
    task_inputs = torch.tensor([shipped_ids()["panoptic"] + [0] * (77 - 7)])
    with torch.no_grad():
        expected = reference(pixel_values=torch.from_numpy(pixels)[None], task_inputs=task_inputs)
    assert torch.equal(seen["kwargs"]["pixel_values"], torch.from_numpy(pixels)[None])
    assert torch.equal(seen["kwargs"]["task_inputs"], task_inputs)
    torch.testing.assert_close(seen["out"].class_queries_logits, expected.class_queries_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(seen["out"].masks_queries_logits, expected.masks_queries_logits, rtol=0, atol=1e-5)


def test_shipped_task_ids_are_what_oneformer_processor_makes(fixtures_dir):
    from safetensors.torch import load_file

    made = load_file(str(fixtures_dir / "dinat" / "oneformer" / "inputs.safetensors"))["task_inputs"]
    ids = task_token_ids(None, 77)
    assert made.tolist() == [ids[task] for task in ("semantic", "instance", "panoptic")]


def test_checkpoint_tokenizer_is_used_when_present(tiny_folder, tmp_path):
    from transformers import CLIPTokenizer, OneFormerImageProcessor, OneFormerProcessor

    folder = tmp_path / "with_tokenizer"
    shutil.copytree(tiny_folder, folder)
    write_clip_vocab(folder, ["the", "task", "is"] + list(TASKS))
    seg = oneformer.load(small_spec(), weights=folder, device=torch.device("cpu"))
    processor = OneFormerProcessor(image_processor=OneFormerImageProcessor(),
                                   tokenizer=CLIPTokenizer.from_pretrained(str(folder)))
    expected = processor._preprocess_text([task_text(t) for t in TASKS], max_length=77)
    got = torch.cat([seg.task_inputs[t] for t in TASKS])
    assert torch.equal(got, expected)
    assert got[0, :7].tolist() != shipped_ids()["semantic"]


def test_semantic(segmenter, photo):
    r = segmenter.predict(photo, task="semantic")
    assert r.kind == "semantic" and r.label_map.shape == photo.shape[:2] and r.label_map.dtype == np.int32
    present = np.unique(r.label_map)
    assert r.class_ids.tolist() == present.tolist() and len(present) >= 2
    assert r.labels == [COCO.names[c] for c in present]
    for mask, c in zip(r.masks, r.class_ids):
        assert np.array_equal(mask, r.label_map == c)
    assert np.all((r.scores > 0) & (r.scores <= 1))
    np.testing.assert_array_equal(r.palette, COCO.colors)
    np.testing.assert_array_equal(r.boxes, boxes_from_masks(r.masks))


def test_panoptic(segmenter, photo):
    r = segmenter.predict(photo, task="panoptic")
    assert r.kind == "panoptic" and len(r) >= 1
    assert r.segment_ids.tolist() == list(range(1, len(r) + 1))
    assert set(np.unique(r.label_map)) <= {0, *r.segment_ids.tolist()}
    for mask, sid in zip(r.masks, r.segment_ids):
        assert mask.any() and np.array_equal(mask, r.label_map == sid)
    np.testing.assert_array_equal(r.is_thing, COCO.isthing[r.class_ids])
    assert np.all(r.scores > 0.8) and r.meta["options"]["threshold"] == 0.8
    stuff = r.class_ids[~r.is_thing]
    assert len(set(stuff.tolist())) == len(stuff)  # stuff classes merge into one segment each


def test_instance(segmenter, photo):
    r = segmenter.predict(photo, task="instance")
    assert r.kind == "instance" and len(r) >= 1 and r.meta["options"]["threshold"] == 0.8
    assert np.all(COCO.isthing[r.class_ids]) and np.all(np.diff(r.scores) <= 0)
    np.testing.assert_array_equal(r.boxes, boxes_from_masks(r.masks))
    loose = segmenter.predict(photo, task="instance", threshold=0.0)
    assert len(loose) > len(r) and len(loose) <= 150


def test_label_set_keeps_only_named_classes(segmenter, photo):
    full = segmenter.predict(photo, task="semantic")
    keep = full.labels[1]
    r = segmenter.predict(photo, task="semantic", label_set=[keep.upper()])
    assert r.labels == [keep]
    assert set(np.unique(r.label_map)) == {-1, full.class_ids[1]}
    pan = segmenter.predict(photo, task="panoptic")
    r = segmenter.predict(photo, task="panoptic", label_set=[pan.labels[0]])
    assert set(r.labels) == {pan.labels[0]} and set(np.unique(r.label_map)) <= {0, *r.segment_ids.tolist()}
    absent = next(name for name in COCO.names if name not in pan.labels)
    r = segmenter.predict(photo, task="panoptic", label_set=[absent])
    assert len(r) == 0 and not r.label_map.any()
    inst = segmenter.predict(photo, task="instance", threshold=0.0)
    r = segmenter.predict(photo, task="instance", threshold=0.0, label_set=inst.labels[0])
    assert set(r.labels) == {inst.labels[0]} and len(r) == inst.labels.count(inst.labels[0])
    with pytest.raises(OptionError, match="'unicorn' is not a class"):
        segmenter.predict(photo, task="semantic", label_set=["unicorn"])
    with pytest.raises(OptionError, match="task='depth' is not one of"):
        segmenter.predict(photo, task="depth")


def test_label_mismatch_warns_once(tmp_path):
    names = list(COCO.names)
    names[8] = "ship"
    tiny_oneformer(names, num_queries=4).save_pretrained(tmp_path / "renamed")
    with pytest.warns(UserWarning, match=r"differs from segkit's coco_panoptic labels for 1 of 133 .*'ship'") as seen:
        seg = oneformer.load(small_spec(), weights=tmp_path / "renamed", device=torch.device("cpu"))
    assert len(seen) == 1 and seg.class_names == list(COCO.names)

    tiny_oneformer([f"thing{i}" for i in range(6)], num_queries=4).save_pretrained(tmp_path / "six")
    with pytest.warns(UserWarning, match="has 6 classes but oneformer-coco-swin-l expects 133"):
        seg = oneformer.load(small_spec(), weights=tmp_path / "six", device=torch.device("cpu"))
    assert seg.class_names == [f"thing{i}" for i in range(6)] and seg.labels.colors is None


def test_broken_checkpoints_raise_one_line_errors(tiny_folder, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        oneformer.load(small_spec(), weights=tmp_path, device=torch.device("cpu"))
    bigger = tmp_path / "bigger"
    shutil.copytree(tiny_folder, bigger)
    config = json.loads((bigger / "config.json").read_text())
    config["hidden_dim"] = 48
    (bigger / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        oneformer.load(small_spec(), weights=bigger, device=torch.device("cpu"))
    assert "\n" not in str(err.value) and str(bigger) in str(err.value)


MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(2)
from segkit.backends import oneformer
spec, folder = sys.argv[1], sys.argv[2]
import dataclasses
from segkit.registry import get_spec
base = get_spec(spec)
seg = oneformer.load(dataclasses.replace(base, options={**base.options, "min_size_test": 128, "max_size_test": 213}),
                     weights=folder, device=torch.device("cpu"))

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def image(h, w):
    rows, cols = np.arange(h, dtype=np.uint8)[:, None] * 3, np.arange(w, dtype=np.uint8)[None] * 5
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = rows, cols, rows ^ cols
    return out

small, big = image(1024, 1024), image(3000, 4000)
for task in ("semantic", "panoptic"):
    seg.predict(small, task=task)
before = peak()
report = {}
for task in ("semantic", "panoptic"):
    result = seg.predict(big, task=task)
    report[task] = {"output": int(result.masks.nbytes + result.label_map.nbytes), "segments": len(result)}
    del result
report["extra"] = peak() - before
print(json.dumps(report))
"""


def test_large_photo_needs_little_more_memory_than_its_output(tmp_path):
    """4000x3000 vs 1024x1024: the extra peak stays near the output size (masks at full size for
    all 8 queries at once would alone be 8 x 48 MB more)."""
    if sys.platform != "linux":
        missing("reads the peak RSS the Linux way")
    import subprocess

    from segkit.labels import load_labels

    names = load_labels("cityscapes_19").names
    tiny_oneformer(names, num_queries=8, seed=2).save_pretrained(tmp_path)
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "oneformer-cityscapes-swin-l", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    largest_output = max(report["semantic"]["output"], report["panoptic"]["output"])
    assert largest_output >= 3000 * 4000 * 4
    assert report["semantic"]["segments"] >= 1
    assert report["extra"] <= largest_output + 96 * 2**20, report


def test_half_precision_keeps_task_tokens_exact(tiny_folder):
    """Task ids (up to 49407) pass through the task MLP as values; in bfloat16 they would be rounded
    to multiples of 256. segkit answers with the tokens computed in float32 from the exact ids."""
    exact = oneformer.load(small_spec(), weights=tiny_folder, device=torch.device("cpu"), dtype=torch.float32)
    half = oneformer.load(small_spec(), weights=tiny_folder, device=torch.device("cpu"), dtype=torch.bfloat16)
    rounded_mlp = exact.model.model.task_encoder.task_mlp  # float32 weights, fed rounded ids
    for task in TASKS:
        ids = exact.task_inputs[task]
        want = exact.model.model.task_encoder(ids.float())
        got = half.model.model.task_encoder(ids.to(torch.bfloat16))  # what transformers hands it
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, want.to(torch.bfloat16))
        naive = rounded_mlp(ids.to(torch.bfloat16).float())
        assert not torch.allclose(naive, want, rtol=1e-3, atol=0)  # without the fix the token moves
    logits = half.model(pixel_values=torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16),
                        task_inputs=half.task_inputs["panoptic"]).class_queries_logits
    assert torch.isfinite(logits.float()).all()
