"""detectron2-style YAML configs of the CutLER family, read without detectron2.

A config file is merged over detectron2's defaults (``detectron2/config/defaults.py`` at commit
02b5c4e) for the keys that change inference; ``_BASE_`` files are merged first, relative to the
file that names them, as detectron2's ``CfgNode.load_yaml_with_base`` does. Training-only keys are
accepted and ignored; unknown keys and values segkit cannot run are errors, so nothing is dropped
silently.
"""

from __future__ import annotations

import ast
import copy
import re
from importlib import resources
from pathlib import Path

from ...errors import ConfigError

# Inference-relevant keys with detectron2's default values.
DEFAULTS = {
    "MODEL": {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "MASK_ON": False,
        "KEYPOINT_ON": False,
        "LOAD_PROPOSALS": False,
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 50,
            "OUT_FEATURES": ["res4"],
            "NUM_GROUPS": 1,
            "NORM": "FrozenBN",
            "WIDTH_PER_GROUP": 64,
            "STRIDE_IN_1X1": True,
            "RES5_DILATION": 1,
            "RES2_OUT_CHANNELS": 256,
            "STEM_OUT_CHANNELS": 64,
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
        },
        "FPN": {"IN_FEATURES": [], "OUT_CHANNELS": 256, "NORM": "", "FUSE_TYPE": "sum"},
        "PROPOSAL_GENERATOR": {"NAME": "RPN", "MIN_SIZE": 0},
        "ANCHOR_GENERATOR": {
            "NAME": "DefaultAnchorGenerator",
            "SIZES": [[32, 64, 128, 256, 512]],
            "ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
            "OFFSET": 0.0,
        },
        "RPN": {
            "HEAD_NAME": "StandardRPNHead",
            "IN_FEATURES": ["res4"],
            "BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
            "PRE_NMS_TOPK_TEST": 6000,
            "POST_NMS_TOPK_TEST": 1000,
            "NMS_THRESH": 0.7,
            "CONV_DIMS": [-1],
        },
        "ROI_HEADS": {
            "NAME": "Res5ROIHeads",
            "NUM_CLASSES": 80,
            "IN_FEATURES": ["res4"],
            "SCORE_THRESH_TEST": 0.05,
            "NMS_THRESH_TEST": 0.5,
        },
        "ROI_BOX_HEAD": {
            "NAME": "",
            "BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_TYPE": "ROIAlignV2",
            "NUM_FC": 0,
            "FC_DIM": 1024,
            "NUM_CONV": 0,
            "CONV_DIM": 256,
            "NORM": "",
            "CLS_AGNOSTIC_BBOX_REG": False,
            "USE_SIGMOID_CE": False,
        },
        "ROI_BOX_CASCADE_HEAD": {
            "BBOX_REG_WEIGHTS": [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]],
        },
        "ROI_MASK_HEAD": {
            "NAME": "MaskRCNNConvUpsampleHead",
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_TYPE": "ROIAlignV2",
            "NUM_CONV": 0,
            "CONV_DIM": 256,
            "NORM": "",
            "CLS_AGNOSTIC_MASK": False,
        },
    },
    "INPUT": {"MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333, "FORMAT": "BGR"},
    "TEST": {"DETECTIONS_PER_IMAGE": 100, "AUG": {"ENABLED": False}},
    "DATASETS": {"TEST": []},
    "VERSION": 2,
}

# Keys (or whole sections) that only matter for training, evaluation or other architectures.
IGNORED = {
    "SOLVER", "DATALOADER", "OUTPUT_DIR", "SEED", "CUDNN_BENCHMARK", "FLOAT32_PRECISION", "VIS_PERIOD",
    "GLOBAL",
    "DATASETS.TRAIN", "DATASETS.PROPOSAL_FILES_TRAIN", "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN",
    "DATASETS.PROPOSAL_FILES_TEST", "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST",
    "INPUT.MIN_SIZE_TRAIN", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "INPUT.MAX_SIZE_TRAIN", "INPUT.RANDOM_FLIP",
    "INPUT.CROP", "INPUT.MASK_FORMAT",
    "TEST.EXPECTED_RESULTS", "TEST.EVAL_PERIOD", "TEST.KEYPOINT_OKS_SIGMAS", "TEST.PRECISE_BN",
    "TEST.AUG.MIN_SIZES", "TEST.AUG.MAX_SIZE", "TEST.AUG.FLIP", "TEST.NO_SEGM",
    "MODEL.DEVICE", "MODEL.WEIGHTS",
    "MODEL.RETINANET", "MODEL.SEM_SEG_HEAD", "MODEL.PANOPTIC_FPN", "MODEL.ROI_KEYPOINT_HEAD",
    "MODEL.RESNETS.DEFORM_MODULATED", "MODEL.RESNETS.DEFORM_NUM_GROUPS",
    "MODEL.ANCHOR_GENERATOR.ANGLES",
    "MODEL.RPN.BOUNDARY_THRESH", "MODEL.RPN.IOU_THRESHOLDS", "MODEL.RPN.IOU_LABELS",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.POSITIVE_FRACTION", "MODEL.RPN.BBOX_REG_LOSS_TYPE",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT", "MODEL.RPN.SMOOTH_L1_BETA", "MODEL.RPN.LOSS_WEIGHT",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "MODEL.ROI_HEADS.IOU_THRESHOLDS", "MODEL.ROI_HEADS.IOU_LABELS", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "MODEL.ROI_HEADS.POSITIVE_FRACTION", "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT",
    "MODEL.ROI_HEADS.USE_DROPLOSS", "MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES",
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER",
    "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES",
    "MODEL.ROI_BOX_CASCADE_HEAD.IOUS",
}

# The built-in configs (segkit/configs/cutler_<name>.yaml), by the names models.yaml uses.
BUILTIN = ("cascade_mask_rcnn_R_50_FPN", "mask_rcnn_R_50_FPN")

CASCADE_HEADS = ("CascadeROIHeads", "CustomCascadeROIHeads")
STANDARD_HEADS = ("StandardROIHeads", "CustomStandardROIHeads")
NORMS = ("", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "FrozenBN", "GN")
MAX_BASE_DEPTH = 10


class CfgNode(dict):
    """A nested dict read with attributes (``cfg.MODEL.RPN.NMS_THRESH``), like detectron2's CfgNode."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def wrap(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        return value


def builtin_path(name: str) -> Path:
    """The file of a built-in config name such as ``cascade_mask_rcnn_R_50_FPN``."""
    return Path(str(resources.files("segkit").joinpath("configs", f"cutler_{name}.yaml")))


CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*")  # how detectron2 config keys look


def load_config(source) -> CfgNode:
    """A resolved config from a YAML path or a built-in name (see ``BUILTIN``)."""
    path = Path(source).expanduser()
    if not path.is_file():
        if str(source) in BUILTIN:
            path = builtin_path(str(source))
        else:
            raise ConfigError(f"{source}: no such config file; pass a detectron2 YAML of the CutLER family "
                              f"or one of the built-in names {', '.join(BUILTIN)}")
    merged = _read_with_bases(path, depth=0)
    cfg = CfgNode.wrap(_apply(merged, path))
    _check_supported(cfg, path)
    return cfg


def _read_with_bases(path: Path, depth: int) -> dict:
    import yaml

    if depth > MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: _BASE_ chain deeper than {MAX_BASE_DEPTH} files; is there a cycle?")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (named by a _BASE_ key); fix the _BASE_ path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections (MODEL:, INPUT:, ...)")
    bases = data.pop("_BASE_", None)
    if bases is None:
        return data
    merged: dict = {}
    for base in bases if isinstance(bases, list) else [bases]:
        base_path = Path(str(base)).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        _merge_into(_read_with_bases(base_path, depth + 1), merged)
    _merge_into(data, merged)
    return merged


def _merge_into(source: dict, target: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(value, target[key])
        else:
            target[key] = copy.deepcopy(value)


def _apply(user: dict, path: Path) -> dict:
    """The defaults overridden by the user's values, checked key by key."""
    cfg = copy.deepcopy(DEFAULTS)

    def visit(node: dict, defaults: dict | None, prefix: str):
        for key, value in node.items():
            full = f"{prefix}{key}"
            if _ignored(full):
                continue
            if defaults is None or key not in defaults:
                if not CONFIG_KEY.fullmatch(str(key)):  # never quote a file that is no config at all
                    raise ConfigError(f"{path}: not a detectron2 config (it has keys that are no config "
                                      "sections); pass a YAML config of the CutLER family")
                raise ConfigError(f"{path}: unknown config key {full}; check its spelling "
                                  "(segkit reads detectron2's keys for the CutLER family)")
            default = defaults[key]
            if isinstance(default, dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {full} must be a section of keys, not {value!r}")
                visit(value, default, full + ".")
            else:
                defaults[key] = _coerce(value, default, full, path)

    visit(user, cfg, "")
    return cfg


def _ignored(full_key: str) -> bool:
    parts = full_key.split(".")
    return any(".".join(parts[:i]) in IGNORED for i in range(1, len(parts) + 1))


def _coerce(value, default, key: str, path: Path):
    """The value in the default's type, as yacs does (strings are Python literals; tuples are lists)."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        value = [list(v) if isinstance(v, tuple) else v for v in value]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list),
    }[type(default)]
    if ok and isinstance(default, list):
        ok = _numbers_where_numbers(value, default)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"{path}: {key} is {shown} but must be {_kind(default)} "
                          f"(default {default!r}); fix the value")
    return float(value) if isinstance(default, float) else value


def _numbers_where_numbers(value: list, default: list) -> bool:
    """A list whose default holds numbers (or lists of numbers) must hold numbers too."""
    sample = default[0] if default else None
    if isinstance(sample, (int, float)) and not isinstance(sample, bool):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if isinstance(sample, list):
        return all(isinstance(v, list) and _numbers_where_numbers(v, sample) for v in value)
    return True


def _kind(default) -> str:
    if isinstance(default, list) and default and isinstance(default[0], (int, float)):
        return "a list of numbers"
    if isinstance(default, list) and default and isinstance(default[0], list):
        return "a list of lists of numbers"
    return f"of type {type(default).__name__}"


def _check_supported(cfg: CfgNode, path: Path) -> None:
    """Refuse what segkit cannot run, naming the key; accept the whole CutLER family."""
    model = cfg.MODEL

    def refuse(key: str, value, wanted: str):
        raise ConfigError(f"{path}: {key} = {value!r} is not supported by segkit's CutLER backend "
                          f"(it runs {wanted}); use a CutLER Mask R-CNN / Cascade Mask R-CNN config")

    fixed = {
        "MODEL.META_ARCHITECTURE": (model.META_ARCHITECTURE, ("GeneralizedRCNN",)),
        "MODEL.BACKBONE.NAME": (model.BACKBONE.NAME, ("build_resnet_fpn_backbone",)),
        "MODEL.PROPOSAL_GENERATOR.NAME": (model.PROPOSAL_GENERATOR.NAME, ("RPN",)),
        "MODEL.RPN.HEAD_NAME": (model.RPN.HEAD_NAME, ("StandardRPNHead",)),
        "MODEL.ANCHOR_GENERATOR.NAME": (model.ANCHOR_GENERATOR.NAME, ("DefaultAnchorGenerator",)),
        "MODEL.ROI_HEADS.NAME": (model.ROI_HEADS.NAME, CASCADE_HEADS + STANDARD_HEADS),
        "MODEL.ROI_BOX_HEAD.NAME": (model.ROI_BOX_HEAD.NAME, ("FastRCNNConvFCHead",)),
        "MODEL.ROI_MASK_HEAD.NAME": (model.ROI_MASK_HEAD.NAME, ("MaskRCNNConvUpsampleHead",)),
        "MODEL.MASK_ON": (model.MASK_ON, (True,)),
        "MODEL.KEYPOINT_ON": (model.KEYPOINT_ON, (False,)),
        "MODEL.LOAD_PROPOSALS": (model.LOAD_PROPOSALS, (False,)),
        "MODEL.RESNETS.DEPTH": (model.RESNETS.DEPTH, (50, 101, 152)),
        "MODEL.RESNETS.RES5_DILATION": (model.RESNETS.RES5_DILATION, (1,)),
        "MODEL.RESNETS.NORM": (model.RESNETS.NORM, NORMS),
        "MODEL.FPN.NORM": (model.FPN.NORM, NORMS),
        "MODEL.FPN.FUSE_TYPE": (model.FPN.FUSE_TYPE, ("sum", "avg")),
        "MODEL.ROI_BOX_HEAD.NORM": (model.ROI_BOX_HEAD.NORM, NORMS),
        "MODEL.ROI_MASK_HEAD.NORM": (model.ROI_MASK_HEAD.NORM, NORMS),
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE": (model.ROI_BOX_HEAD.POOLER_TYPE, ("ROIAlignV2", "ROIAlign")),
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE": (model.ROI_MASK_HEAD.POOLER_TYPE, ("ROIAlignV2", "ROIAlign")),
        "INPUT.FORMAT": (cfg.INPUT.FORMAT, ("RGB", "BGR")),
        "TEST.AUG.ENABLED": (cfg.TEST.AUG.ENABLED, (False,)),
        "VERSION": (cfg.VERSION, (2,)),
    }
    for key, (value, allowed) in fixed.items():
        if value not in allowed:
            refuse(key, value, " or ".join(repr(a) for a in allowed))
    if any(model.RESNETS.DEFORM_ON_PER_STAGE):
        refuse("MODEL.RESNETS.DEFORM_ON_PER_STAGE", model.RESNETS.DEFORM_ON_PER_STAGE, "no deformable convs")
    if model.ROI_HEADS.NAME in CASCADE_HEADS and not model.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
        refuse("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False, "class-agnostic regression in cascades")
    if model.ROI_BOX_HEAD.NUM_FC + model.ROI_BOX_HEAD.NUM_CONV == 0:
        refuse("MODEL.ROI_BOX_HEAD.NUM_FC", 0, "box heads with at least one layer")
    _check_features(cfg, path)
    for key, value in (("INPUT.MIN_SIZE_TEST", cfg.INPUT.MIN_SIZE_TEST),
                       ("INPUT.MAX_SIZE_TEST", cfg.INPUT.MAX_SIZE_TEST),
                       ("MODEL.ROI_HEADS.NUM_CLASSES", model.ROI_HEADS.NUM_CLASSES)):
        if value <= 0:
            refuse(key, value, "positive values here")
    if len(model.PIXEL_MEAN) != 3 or len(model.PIXEL_STD) != 3:
        refuse("MODEL.PIXEL_MEAN/PIXEL_STD", (model.PIXEL_MEAN, model.PIXEL_STD), "3-channel images")
    if len(model.RPN.CONV_DIMS) == 0:
        refuse("MODEL.RPN.CONV_DIMS", [], "at least one shared RPN conv")


def _check_features(cfg: CfgNode, path: Path) -> None:
    """FPN inputs must be consecutive ResNet stages; heads must read FPN levels that exist."""
    model = cfg.MODEL
    stages = ["res2", "res3", "res4", "res5"]
    if not model.RESNETS.OUT_FEATURES or any(f not in stages for f in model.RESNETS.OUT_FEATURES):
        raise ConfigError(f"{path}: MODEL.RESNETS.OUT_FEATURES {model.RESNETS.OUT_FEATURES} must name "
                          f"ResNet stages among {stages}")
    fpn_in = model.FPN.IN_FEATURES
    if not fpn_in or any(f not in model.RESNETS.OUT_FEATURES for f in fpn_in) or \
            fpn_in != stages[stages.index(fpn_in[0]):stages.index(fpn_in[0]) + len(fpn_in)]:
        raise ConfigError(f"{path}: MODEL.FPN.IN_FEATURES {fpn_in} must be consecutive ResNet stages "
                          f"listed in MODEL.RESNETS.OUT_FEATURES {model.RESNETS.OUT_FEATURES}")
    levels = fpn_levels(cfg)
    for key, names in (("MODEL.RPN.IN_FEATURES", model.RPN.IN_FEATURES),
                       ("MODEL.ROI_HEADS.IN_FEATURES", model.ROI_HEADS.IN_FEATURES)):
        if not names or any(n not in levels for n in names):
            raise ConfigError(f"{path}: {key} {names} must name FPN outputs among {levels}")
    pooled = [int(n[1:]) for n in model.ROI_HEADS.IN_FEATURES]
    if pooled != list(range(pooled[0], pooled[0] + len(pooled))):
        raise ConfigError(f"{path}: MODEL.ROI_HEADS.IN_FEATURES {model.ROI_HEADS.IN_FEATURES} must be "
                          "consecutive pyramid levels, finest first (the RoI poolers pick among them by box size)")
    num_levels = len(model.RPN.IN_FEATURES)
    for key in ("SIZES", "ASPECT_RATIOS"):
        value = model.ANCHOR_GENERATOR[key]
        if not value or (isinstance(value[0], list) and len(value) not in (1, num_levels)):
            raise ConfigError(f"{path}: MODEL.ANCHOR_GENERATOR.{key} needs one entry or one per RPN level "
                              f"({num_levels}), got {value}")
    sizes, ratios = anchor_params(cfg)
    if len({len(s) * len(r) for s, r in zip(sizes, ratios)}) != 1:
        raise ConfigError(f"{path}: MODEL.ANCHOR_GENERATOR gives levels different numbers of anchors "
                          "(sizes x aspect ratios); the RPN head needs the same number on every level")


def fpn_levels(cfg: CfgNode) -> list[str]:
    """Names of the FPN outputs: p<k> for each input stage res<k>, plus one max-pooled level above."""
    ks = [int(name[3:]) for name in cfg.MODEL.FPN.IN_FEATURES]
    return [f"p{k}" for k in ks] + [f"p{ks[-1] + 1}"]


def anchor_params(cfg: CfgNode) -> tuple[list[list[float]], list[list[float]]]:
    """Anchor sizes and aspect ratios per RPN level, broadcast like detectron2's anchor generator."""
    num_levels = len(cfg.MODEL.RPN.IN_FEATURES)

    def per_level(values):
        if not isinstance(values[0], list):
            return [list(values)] * num_levels
        return [list(values[0])] * num_levels if len(values) == 1 else [list(v) for v in values]

    return per_level(cfg.MODEL.ANCHOR_GENERATOR.SIZES), per_level(cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS)


def is_cascade(cfg: CfgNode) -> bool:
    return cfg.MODEL.ROI_HEADS.NAME in CASCADE_HEADS


def describe(cfg: CfgNode) -> str:
    """A short architecture name, e.g. 'Cascade Mask R-CNN R50-FPN, 1 class'."""
    kind = "Cascade Mask R-CNN" if is_cascade(cfg) else "Mask R-CNN"
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    return f"{kind} R{cfg.MODEL.RESNETS.DEPTH}-FPN, {n} class{'es' if n > 1 else ''}"
