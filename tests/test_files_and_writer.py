"""The I/O layer: inputs, names in any language, claims across runs, atomic writes, batch files."""

import errno
import json
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segkit.errors import DiskFullError, SegkitError
from segkit.files import OutputFolder, check_writable, collect_inputs, safe_name
from segkit.result import Result, boxes_from_masks

from conftest import gray_image, two_masks
from segkit.writer import OutputWriter


def _prompted(labels=("cat", "../../evil")):
    masks = two_masks()
    return Result("prompted", masks, list(labels), [0.75, 0.75], boxes_from_masks(masks),
                  heatmaps=masks.astype(np.float32) * 0.75,
                  label_map=np.where(masks[0], 1, np.where(masks[1], 2, 0)), meta={"options": {"prompts": labels}})


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                  and not p.name.startswith(".segkit"))


def test_writer_outputs(tmp_path):
    out = tmp_path / "out"
    writer = OutputWriter(out, save=("labels", "json", "heatmaps", "masks", "grid"))
    written = writer.write(tmp_path / "a" / "pic.jpg", gray_image(), _prompted())
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == sorted(["pic_overlay.png", "pic_labels.png", "pic_cat_heat.png", "pic_evil_heat.png",
                            "pic_masks/000_cat.png", "pic_masks/001_evil.png", "pic_grid.png", "pic.json"])
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written)
    heat_png = np.asarray(Image.open(out / "pic_cat_heat.png"))
    assert heat_png.dtype == np.uint8 and heat_png.max() == round(0.75 * 255)
    record = json.loads((out / "pic.json").read_text())
    assert record["kind"] == "prompted" and record["width"] == 30 and record["height"] == 20
    assert record["options"] == {"prompts": ["cat", "../../evil"]}
    assert [s["label"] for s in record["segments"]] == ["cat", "../../evil"]
    assert record["segments"][0]["heatmap_file"] == "pic_cat_heat.png"
    # Same stem again (another folder, other case): new names, nothing overwritten on any file system.
    second = writer.write(tmp_path / "b" / "pic.png", gray_image(), _prompted())
    assert second[0].name == "pic-1_overlay.png"
    third = writer.write(tmp_path / "c" / "PIC.png", gray_image(), _prompted())
    assert third[0].name == "PIC-2_overlay.png"
    writer.close()
    assert not list(out.glob(".segkit-tmp-*")) and not list(out.glob(".segkit-run-*"))


def test_names_of_different_images_never_collide(tmp_path):
    """cat.jpg with prompt 'x_y' and cat_x.jpg with prompt 'y' would both write cat_x_y_heat.png."""
    writer = OutputWriter(tmp_path, save=("json", "heatmaps"))
    writer.write("cat.jpg", gray_image(), _prompted(["x_y", "z"]))
    second = writer.write("cat_x.jpg", gray_image(), _prompted(["y", "z"]))
    assert sorted(p.name for p in second) == ["cat_x-1.json", "cat_x-1_overlay.png", "cat_x-1_y_heat.png",
                                              "cat_x-1_z_heat.png"]
    first = json.loads((tmp_path / "cat.json").read_text())
    assert first["segments"][0]["heatmap_file"] == "cat_x_y_heat.png"
    assert json.loads((tmp_path / "cat_x-1.json").read_text())["image"] == "cat_x.jpg"


def test_writer_never_overwrites_inputs(tmp_path):
    masks = two_masks()
    res = Result("instance", masks, ["o", "o"], [1, 1], boxes_from_masks(masks))
    victim = tmp_path / "x_overlay.png"
    victim.write_bytes(b"precious")
    writer = OutputWriter(tmp_path, inputs=[tmp_path / "x.jpg", victim])
    written = writer.write(tmp_path / "x.jpg", gray_image(), res)
    assert victim.read_bytes() == b"precious"
    assert [p.name for p in written] == ["x-1_overlay.png", "x-1_labels.png", "x-1.json"]


@pytest.mark.parametrize("text, expected", [
    ("写真", "写真"), ("猫", "猫"), ("name with spaces é", "name with spaces é"), ("a/b\\c", "a_b_c"),
    ("../../x", "x"), (".hidden", "hidden"),
    ('q<>:"|?*', "q_"), ("tab\there", "tab_here"), ("trailing. ", "trailing"), ("..", "fallback"),
    ("", "fallback"), ("CON", "_CON"), ("nul.txt", "_nul.txt"),
])
def test_safe_name_keeps_text_in_any_language(text, expected):
    assert safe_name(text, "fallback") == expected


def test_safe_name_cuts_at_a_character_boundary():
    name = safe_name("猫" * 200, "x", max_bytes=100)
    assert len(name.encode()) <= 100 and name == "猫" * 33


def test_japanese_names_are_kept_and_fit_255_bytes(tmp_path):
    writer = OutputWriter(tmp_path, save=("json", "heatmaps", "masks"))
    long_stem = "長い名前" * 40  # 480 bytes of UTF-8
    written = writer.write(f"{long_stem}.jpg", gray_image(), _prompted(["犬", "草" * 100]))
    assert all(len(part.encode()) <= 255 for p in written for part in p.relative_to(tmp_path).parts)
    writer.write("写真.jpg", gray_image(), _prompted(["犬", "空"]))
    assert (tmp_path / "写真_犬_heat.png").is_file() and (tmp_path / "写真.json").is_file()
    writer.write("写真.png", gray_image(), _prompted(["犬", "空"]))
    assert (tmp_path / "写真-1_overlay.png").is_file()


def test_a_failed_write_leaves_nothing_and_keeps_earlier_files(tmp_path, monkeypatch):
    writer = OutputWriter(tmp_path, save=("json", "heatmaps"))
    writer.write("cat.jpg", gray_image(), _prompted())
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    writer.close()

    calls = []
    real_dump = json.dump

    def full_disk(*args, **kwargs):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full_disk)
    rerun = OutputWriter(tmp_path, save=("json", "heatmaps"))
    with pytest.raises(DiskFullError, match="disk is full"):
        rerun.write("cat.jpg", gray_image(), _prompted(["other", "prompts"]))
    monkeypatch.setattr(json, "dump", real_dump)
    assert calls
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before
    assert not list(tmp_path.glob(".segkit-tmp-*"))
    rerun.close()


def test_interrupt_during_a_write_leaves_no_partial_file(tmp_path):
    writer = OutputWriter(tmp_path, save=("json", "heatmaps"))
    with pytest.raises(KeyboardInterrupt):
        writer.write("cat.jpg", gray_image(), _prompted(), abort=lambda: True)
    assert _files(tmp_path) == [] and not list(tmp_path.glob(".segkit-tmp-*"))


def _claim_in_child(folder, ready, release):
    out = OutputFolder(folder)
    out.claim(lambda k: [f"cat{'' if k == 0 else f'-{k}'}_overlay.png"])
    ready.set()
    release.wait(30)
    out.close()


def test_a_live_run_keeps_its_names_and_a_finished_one_gives_them_back(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_claim_in_child, args=(tmp_path, ready, release))
    child.start()
    try:
        assert ready.wait(60)
        mine = OutputFolder(tmp_path)
        k, names = mine.claim(lambda k: [f"cat{'' if k == 0 else f'-{k}'}_overlay.png"])
        assert names == ["cat-1_overlay.png"]  # cat is claimed by the live run
        mine.close()
    finally:
        release.set()
        child.join(30)
    rerun = OutputFolder(tmp_path)
    assert rerun.claim(lambda k: [f"cat{'' if k == 0 else f'-{k}'}_overlay.png"])[1] == ["cat_overlay.png"]
    rerun.close()


def _kill_after_claim(folder):
    out = OutputFolder(folder)
    out.claim(lambda k: ["dead_overlay.png"])
    os._exit(0)  # dies holding its claims, as a crash would


def test_a_crashed_run_leaves_no_stale_claim(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_kill_after_claim, args=(tmp_path,))
    child.start()
    child.join(60)
    out = OutputFolder(tmp_path)
    assert out.claim(lambda k: ["dead_overlay.png" if k == 0 else "dead-1_overlay.png"])[1] == ["dead_overlay.png"]
    out.close()
    assert not list(tmp_path.glob(".segkit-run-*"))


def test_panoptic_export_and_coco_file(tmp_path):
    masks = two_masks()
    res = Result("panoptic", masks, ["person", "sky"], [0.9, 0.8], boxes_from_masks(masks),
                 label_map=np.where(masks[0], 5, np.where(masks[1], 9, 0)), segment_ids=[5, 9],
                 class_ids=[0, 119], category_ids=[1, 187], is_thing=[True, False])
    coco = tmp_path / "labels" / "coco.json"
    (tmp_path / "labels").mkdir()
    writer = OutputWriter(tmp_path / "out", save=("panoptic", "json"), coco_path=coco)
    writer.write("a.jpg", gray_image(), res)
    writer.write("b.jpg", gray_image(), res)
    written = writer.finish()
    writer.close()
    assert sorted(p.name for p in written) == ["coco.json", "panoptic.json"]
    png = np.asarray(Image.open(tmp_path / "out" / "a_panoptic.png")).astype(np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    np.testing.assert_array_equal(ids, res.label_map)
    panoptic = json.loads((tmp_path / "out" / "panoptic.json").read_text())
    assert [a["file_name"] for a in panoptic["annotations"]] == ["a_panoptic.png", "b_panoptic.png"]
    info = panoptic["annotations"][0]["segments_info"]
    assert [(s["id"], s["category_id"], s["area"]) for s in info] == [(5, 1, int(masks[0].sum())),
                                                                       (9, 187, int(masks[1].sum()))]
    assert {c["id"]: c["isthing"] for c in panoptic["categories"]} == {1: 1, 187: 0}
    data = json.loads(coco.read_text())
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg"]
    assert len(data["annotations"]) == 4 and {a["iscrowd"] for a in data["annotations"]} == {0}
    decoded = mask_utils.decode(data["annotations"][1]["segmentation"]).astype(bool)
    np.testing.assert_array_equal(decoded, masks[1])
    assert data["annotations"][1]["image_id"] == 1 and data["annotations"][2]["image_id"] == 2


def test_collect_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.webp"):
        (tmp_path / name).write_bytes(b"x")
    found = collect_inputs([str(tmp_path)])
    assert [p.name for p in found.paths] == ["a.jpg", "b.PNG"]
    found = collect_inputs([str(tmp_path)], recursive=True)
    assert sorted(p.name for p in found.paths) == ["a.jpg", "b.PNG", "c.webp"]
    found = collect_inputs([str(tmp_path / "*.jpg"), str(tmp_path / "a.jpg"), str(tmp_path / "nope.jpg")])
    assert [p.name for p in found.paths] == ["a.jpg"] and len(found.missing) == 1
    found = collect_inputs([str(tmp_path)], recursive=True, exclude=tmp_path / "sub")
    assert sorted(p.name for p in found.paths) == ["a.jpg", "b.PNG"]
    found = collect_inputs([str(tmp_path / "sub" / "c.webp")], exclude=tmp_path / "sub")
    assert [p.name for p in found.paths] == ["c.webp"]  # a file named explicitly is always kept


def test_output_folder_inside_the_inputs_through_a_symlink(tmp_path):
    inputs = tmp_path / "indir"
    (inputs / "out").mkdir(parents=True)
    (inputs / "a.jpg").write_bytes(b"x")
    (inputs / "out" / "a_overlay.png").write_bytes(b"x")
    link = tmp_path / "outlink"
    link.symlink_to(inputs / "out")
    found = collect_inputs([str(inputs)], recursive=True, exclude=link)
    assert [p.name for p in found.paths] == ["a.jpg"]


def test_hints_when_nothing_is_found(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "a.jpg").write_bytes(b"x")
    found = collect_inputs([str(tmp_path / "deep")])
    assert found.paths == [] and "--recursive" in found.hints[0]
    found = collect_inputs([str(tmp_path / "deep")], exclude=tmp_path / "deep")
    assert found.paths == [] and "is the output folder" in found.hints[0]


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deep")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SegkitError, match="not writable"):
        check_writable(blocker / "out")


def test_jpeg_overlay_keeps_everything_else_lossless(tmp_path):
    writer = OutputWriter(tmp_path, save=("labels", "json", "heatmaps"), overlay_format="jpg")
    written = writer.write("cat.jpg", gray_image(), _prompted())
    writer.close()
    assert sorted(p.name for p in written) == ["cat.json", "cat_cat_heat.png", "cat_evil_heat.png", "cat_labels.png",
                                               "cat_overlay.jpg"]
    with Image.open(tmp_path / "cat_overlay.jpg") as overlay:
        assert overlay.format == "JPEG" and overlay.size == (30, 20)
    with Image.open(tmp_path / "cat_labels.png") as labels:
        assert labels.format == "PNG"


def test_batch_files_number_coco_images_as_coco_does(tmp_path):
    masks = two_masks()
    res = Result("instance", masks, ["o", "o"], [0.9, 0.8], boxes_from_masks(masks))
    writer = OutputWriter(tmp_path / "out", save=("json",), coco_path=tmp_path / "coco.json")
    for name in ("000000397133.jpg", "cat.jpg", "val/000000000002.jpg", "other/000000397133.jpg"):
        writer.write(name, gray_image(), res)
    writer.finish()
    writer.close()
    data = json.loads((tmp_path / "coco.json").read_text())
    assert [image["id"] for image in data["images"]] == [397133, 2, 3, 4]
    assert len({a["id"] for a in data["annotations"]}) == 8


def test_an_unknown_overlay_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="overlay_format must be one of"):
        OutputWriter(tmp_path / "out", overlay_format="jpeg")
    assert not (tmp_path / "out").exists()
