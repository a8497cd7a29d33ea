"""transformers' DiNAT and OneFormer-with-DiNAT running on segkit's attention: legacy NATTEN outputs, brute force."""

import copy
import json

import pytest
import torch

from conftest import reference_av, reference_qk
from segkit.backends.oneformer.dinat import neighborhood_attention_forward, patch_transformers_dinat

TASKS = ("semantic", "instance", "panoptic")


@pytest.fixture(scope="module")
def modeling_dinat():
    patch_transformers_dinat()
    from transformers.models.dinat import modeling_dinat

    return modeling_dinat


@pytest.fixture(scope="module")
def fixture_backbone(fixtures_dir, modeling_dinat):
    from safetensors.torch import load_file
    from transformers import DinatConfig

    folder = fixtures_dir / "dinat" / "dinat_backbone"
    model = modeling_dinat.DinatBackbone(DinatConfig.from_pretrained(folder)).eval()
    model.load_state_dict(load_file(folder / "model.safetensors"))
    manifest = json.loads((fixtures_dir / "dinat" / "manifest.json").read_text())
    return (model, load_file(folder / "inputs.safetensors")["pixel_values"], load_file(folder / "outputs.safetensors"),
            manifest["dinat_backbone"]["layers"])


def _assert_maps_match(maps, expected: dict, prefix: str, tolerance: float):
    """``maps[i]`` against ``expected[f"{prefix}.{i}"]``, and as many maps as the fixture holds."""
    assert len(maps) == sum(key.startswith(prefix + ".") for key in expected) > 0
    for i, feature_map in enumerate(maps):
        torch.testing.assert_close(feature_map, expected[f"{prefix}.{i}"], atol=tolerance, rtol=tolerance)


def test_patch_is_idempotent_and_builds_dinat_without_natten(fixtures_dir, modeling_dinat, monkeypatch):
    """With natten reported missing (whatever is installed), the patched DiNAT builds and gives NATTEN's outputs."""
    from safetensors.torch import load_file
    from transformers import DinatConfig
    from transformers.utils import import_utils

    check = modeling_dinat.requires_backends
    patch_transformers_dinat()
    assert modeling_dinat.requires_backends is check
    assert modeling_dinat.NeighborhoodAttention.forward is neighborhood_attention_forward
    monkeypatch.setitem(import_utils.BACKENDS_MAPPING, "natten", (lambda: False, "{0} requires natten"))
    with pytest.raises(ImportError, match="DinatBackbone requires natten"):  # transformers' own check refuses
        import_utils.requires_backends(modeling_dinat.DinatBackbone, ["natten"])
    folder = fixtures_dir / "dinat" / "dinat_backbone"
    model = modeling_dinat.DinatBackbone(DinatConfig.from_pretrained(folder)).eval()
    model.load_state_dict(load_file(folder / "model.safetensors"))
    with torch.no_grad():
        maps = model(load_file(folder / "inputs.safetensors")["pixel_values"]).feature_maps
    _assert_maps_match(maps, load_file(folder / "outputs.safetensors"), "feature_maps", 1e-4)


def test_backbone_matches_legacy_natten(fixture_backbone):
    model, pixels, expected, _ = fixture_backbone
    with torch.no_grad():
        maps = model(pixels).feature_maps
    _assert_maps_match(maps, expected, "feature_maps", 1e-4)


def test_backbone_float64_matches_tightly(fixture_backbone):
    model, pixels, expected, _ = fixture_backbone
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        maps = model64(pixels.double()).feature_maps
    _assert_maps_match(maps, expected, "feature_maps_f64", 1e-12)


def test_every_attention_layer_including_padded_maps(fixture_backbone):
    """Each NA module on its recorded (layer-normed, padded) input gives NATTEN's recorded context."""
    model, _, expected, layers = fixture_backbone
    assert len(layers) == sum(model.config.depths)
    padded = 0
    for layer in layers:
        stage, index = layer["layer"].split(".")
        module = model.encoder.levels[int(stage[5:]) - 1].layers[int(index[5:])].attention.self
        with torch.no_grad():
            (context,) = module(expected[f"{layer['layer']}.na_in"])
        torch.testing.assert_close(context, expected[f"{layer['layer']}.na_out"], atol=1e-5, rtol=1e-5)
        padded += layer["map_hw"] != layer["na_input_hw_after_padding"]
    assert padded >= 3


def test_oneformer_with_dinat_matches_legacy_natten(fixtures_dir, modeling_dinat):
    from safetensors.torch import load_file
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation

    folder = fixtures_dir / "dinat" / "oneformer"
    model = OneFormerForUniversalSegmentation(OneFormerConfig.from_pretrained(folder)).eval()
    model.load_state_dict(load_file(folder / "model.safetensors"))
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "outputs.safetensors")
    for row, task in enumerate(TASKS):
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"],
                        task_inputs=inputs["task_inputs"][row:row + 1], output_hidden_states=True)
        for name in ("class_queries_logits", "masks_queries_logits", "task_token"):
            torch.testing.assert_close(getattr(out, name), expected[f"{task}.{name}"], atol=1e-4, rtol=1e-4)
    _assert_maps_match(out.encoder_hidden_states, expected, "backbone_feature_maps", 1e-4)


def reference_forward(self, hidden_states, output_attentions=False):
    """Brute-force NA module: the legacy layout, the test's own reference ops."""
    batch, height, width, channels = hidden_states.shape
    heads = self.num_attention_heads

    def split_heads(x):
        return x.reshape(batch, height, width, heads, channels // heads).permute(0, 3, 1, 2, 4)

    query = split_heads(self.query(hidden_states)) * (channels // heads) ** -0.5
    key, value = split_heads(self.key(hidden_states)), split_heads(self.value(hidden_states))
    probs = reference_qk(query, key, self.rpb, self.kernel_size, self.dilation).softmax(-1)
    context = reference_av(probs, value, self.kernel_size, self.dilation)
    return (context.permute(0, 2, 3, 1, 4).reshape(batch, height, width, channels),)


@pytest.fixture(scope="module")
def random_dinat(modeling_dinat):
    """Other kernel, dilations and an odd input size than the fixtures; random (non-zero) biases."""
    from transformers import DinatConfig

    config = DinatConfig(embed_dim=12, depths=[2, 3], num_heads=[2, 3], kernel_size=5, mlp_ratio=2.0,
                         dilations=[[1, 4], [3, 1, 2]], layer_scale_init_value=0.5)
    torch.manual_seed(3)
    model = modeling_dinat.DinatModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("rpb"):
                parameter.normal_()
    return model, torch.randn(2, 3, 4 * 21, 4 * 26)


def test_random_dinat_matches_brute_force(random_dinat, modeling_dinat, monkeypatch):
    model, pixels = random_dinat
    with torch.no_grad():
        result = model(pixels).last_hidden_state
        monkeypatch.setattr(modeling_dinat.NeighborhoodAttention, "forward", reference_forward)
        expected = model(pixels).last_hidden_state
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-4)


def test_returned_attentions_are_the_probabilities(random_dinat):
    """output_attentions takes the two-step path; its output equals the fused one and its maps are softmaxes."""
    model, pixels = random_dinat
    with torch.no_grad():
        fused = model(pixels).last_hidden_state
        out = model(pixels, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, fused, atol=1e-5, rtol=1e-5)
    first = out.attentions[0]
    assert first.shape == (2, 2, 21, 26, 25)
    torch.testing.assert_close(first.sum(-1), torch.ones(first.shape[:-1]), atol=1e-5, rtol=1e-5)
