"""CutLER configs: _BASE_ inheritance, detectron2's defaults, built-ins, and refusals."""

import textwrap

import pytest
import yaml

from segkit.backends.cutler.config import BUILTIN, DEFAULTS, load_config
from segkit.errors import ConfigError


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(tree, dotted):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _plain(value):
    """Lists and tuples compared alike, numbers as floats (yaml writes 1 and 1.0 differently)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize("name", ["cascade", "mrcnn"])
def test_base_and_flat_configs_resolve_alike(cutler_dir, name):
    assert load_config(cutler_dir / f"{name}_tiny.yaml") == load_config(cutler_dir / f"{name}_tiny_flat.yaml")


@pytest.mark.parametrize("name", ["cascade", "mrcnn"])
def test_every_key_equals_what_detectron2_used(cutler_dir, name):
    """The resolved YAML is detectron2's cfg.dump(): it checks our defaults and merging key by key."""
    ours = load_config(cutler_dir / f"{name}_tiny.yaml")
    detectron2 = yaml.safe_load((cutler_dir / f"{name}_tiny.resolved.yaml").read_text())
    keys = [key for key, _ in _leaves(DEFAULTS)]
    assert len(keys) > 60
    for key in keys:
        assert _plain(_lookup(ours, key)) == _plain(_lookup(detectron2, key)), key


def test_builtin_cascade_is_cutlers_imagenet_config():
    cfg = load_config("cascade_mask_rcnn_R_50_FPN")
    model = cfg.MODEL
    assert model.ROI_HEADS.NAME == "CustomCascadeROIHeads"
    assert model.ROI_HEADS.NUM_CLASSES == 1
    assert model.ROI_HEADS.SCORE_THRESH_TEST == 0.0
    assert model.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG is True
    assert model.RESNETS.NORM == model.FPN.NORM == "SyncBN"
    assert model.RESNETS.STRIDE_IN_1X1 is False and model.BACKBONE.FREEZE_AT == 0
    assert model.PIXEL_MEAN == [123.675, 116.28, 103.53] and model.PIXEL_STD == [58.395, 57.12, 57.375]
    assert model.RPN.NMS_THRESH == 0.65
    assert (model.RPN.PRE_NMS_TOPK_TEST, model.RPN.POST_NMS_TOPK_TEST) == (1000, 1000)
    assert cfg.INPUT.FORMAT == "RGB"
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert model.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS == [[10, 10, 5, 5], [20, 20, 10, 10], [30, 30, 15, 15]]


def test_builtin_mask_rcnn_differs_only_in_the_heads():
    cascade, mrcnn = load_config(BUILTIN[0]), load_config(BUILTIN[1])
    assert mrcnn.MODEL.ROI_HEADS.NAME == "CustomStandardROIHeads"
    assert mrcnn.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG is False
    differing = [k for k, v in _leaves(cascade) if _lookup(mrcnn, k) != v]
    assert sorted(differing) == ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "MODEL.ROI_HEADS.NAME"]


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _derived(tmp_path, cutler_dir, extra: str):
    """A config over the fixture's tiny cascade, with ``extra`` merged on top."""
    _write(tmp_path, "base/cascade.yaml", (cutler_dir / "cascade_tiny_flat.yaml").read_text())
    return _write(tmp_path, "configs/derived.yaml", '_BASE_: "../base/cascade.yaml"\n' + textwrap.dedent(extra))


def test_base_paths_are_relative_to_the_file_and_values_override(tmp_path, cutler_dir):
    path = _derived(tmp_path, cutler_dir, """
        MODEL:
          RPN: {POST_NMS_TOPK_TEST: 300}
          ANCHOR_GENERATOR: {ASPECT_RATIOS: "((0.25, 1.0, 4.0),)"}
        INPUT: {MIN_SIZE_TEST: 256}
        SOLVER: {ANYTHING: [1, 2], GOES: here}
        """)
    cfg = load_config(path)
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 300
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.25, 1.0, 4.0]]
    assert cfg.INPUT.MIN_SIZE_TEST == 256
    assert cfg.MODEL.RPN.NMS_THRESH == 0.65  # from the base


def test_list_of_bases_merges_in_order(tmp_path, cutler_dir):
    _write(tmp_path, "model.yaml", (cutler_dir / "cascade_tiny_flat.yaml").read_text())
    _write(tmp_path, "a.yaml", "INPUT: {MIN_SIZE_TEST: 100, MAX_SIZE_TEST: 200}\n")
    _write(tmp_path, "b.yaml", "INPUT: {MIN_SIZE_TEST: 150}\n")
    cfg = load_config(_write(tmp_path, "top.yaml", '_BASE_: ["model.yaml", "a.yaml", "b.yaml"]\n'))
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (150, 200)


@pytest.mark.parametrize("extra, message", [
    ("MODEL: {RPN: {NMS_TRESH: 0.5}}", "unknown config key MODEL.RPN.NMS_TRESH"),
    ("MODEL: {ROI_HEADS: {NAME: Res5ROIHeads}}", "MODEL.ROI_HEADS.NAME"),
    ("MODEL: {META_ARCHITECTURE: RetinaNet}", "MODEL.META_ARCHITECTURE"),
    ("MODEL: {RESNETS: {DEFORM_ON_PER_STAGE: [false, true, true, true]}}", "DEFORM_ON_PER_STAGE"),
    ("MODEL: {RESNETS: {RES5_DILATION: 2}}", "RES5_DILATION"),
    ("MODEL: {RESNETS: {DEPTH: 34}}", "MODEL.RESNETS.DEPTH"),
    ("MODEL: {ROI_BOX_HEAD: {CLS_AGNOSTIC_BBOX_REG: false}}", "CLS_AGNOSTIC_BBOX_REG"),
    ("MODEL: {ROI_BOX_HEAD: {POOLER_TYPE: ROIAlignRotated}}", "POOLER_TYPE"),
    ("MODEL: {MASK_ON: false}", "MODEL.MASK_ON"),
    ("MODEL: {FPN: {NORM: LN}}", "MODEL.FPN.NORM"),
    ("MODEL: {RPN: {IN_FEATURES: [p2, p9]}}", "MODEL.RPN.IN_FEATURES"),
    ("MODEL: {ROI_HEADS: {IN_FEATURES: [p2, p4]}}", "MODEL.ROI_HEADS.IN_FEATURES"),
    ("MODEL: {FPN: {IN_FEATURES: [res2, res4]}}", "MODEL.FPN.IN_FEATURES"),
    ("MODEL: {ANCHOR_GENERATOR: {SIZES: [[32], [64]]}}", "ANCHOR_GENERATOR.SIZES"),
    ("INPUT: {FORMAT: YUV}", "INPUT.FORMAT"),
    ("INPUT: {MIN_SIZE_TEST: [800, 900]}", "INPUT.MIN_SIZE_TEST"),
    ("TEST: {AUG: {ENABLED: true}}", "TEST.AUG.ENABLED"),
    ("MODEL: {RPN: [1, 2]}", "MODEL.RPN must be a section"),
])
def test_what_cannot_be_honoured_is_an_error(tmp_path, cutler_dir, extra, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as info:
        load_config(_derived(tmp_path, cutler_dir, extra))
    assert "derived.yaml" in str(info.value) and "\n" not in str(info.value)


def test_training_only_keys_are_ignored(cutler_dir):
    flat = yaml.safe_load((cutler_dir / "cascade_tiny_flat.yaml").read_text())
    assert flat["MODEL"]["ROI_HEADS"]["USE_DROPLOSS"] and flat["DATALOADER"]["COPY_PASTE"]
    assert "USE_DROPLOSS" not in load_config(cutler_dir / "cascade_tiny_flat.yaml").MODEL.ROI_HEADS


def test_missing_files_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="_BASE_"):
        load_config(_write(tmp_path, "x.yaml", "_BASE_: nowhere.yaml\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "y.yaml", "MODEL: [unclosed\n"))
    with pytest.raises(ConfigError, match="cycle"):
        load_config(_write(tmp_path, "loop.yaml", "_BASE_: loop.yaml\n"))


def test_a_file_that_is_no_config_is_never_quoted(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n")
    config = tmp_path / "evil.yaml"
    config.write_text(f"_BASE_: {secret}\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "not a detectron2 config" in str(err.value)
    assert "saltsalt" not in str(err.value) and "99999" not in str(err.value)


@pytest.mark.parametrize("value, message", [
    ("[a, b, c]", r"MODEL\.PIXEL_MEAN is \['a', 'b', 'c'\] but must be a list of numbers"),
    ("fast", r"MODEL\.PIXEL_MEAN is 'fast' but must be a list of numbers"),
    ("[[1, 2, 3]]", r"MODEL\.PIXEL_MEAN is \[\[1, 2, 3\]\] but must be a list of numbers"),
])
def test_values_are_type_checked_when_the_config_loads(tmp_path, cutler_dir, value, message):
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{cutler_dir / "cascade_tiny.yaml"}"\nMODEL:\n  PIXEL_MEAN: {value}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(config)
