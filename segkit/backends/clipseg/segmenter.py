"""The CLIPSeg segmenter: transformers' model run without repeated work (see the package docstring)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...checkpoints import from_pretrained, quiet_transformers
from ...errors import CheckpointError, ConfigError, OptionError, first_line
from ...imageio import as_rgb_array
from ...registry import ModelSpec
from ...result import Result, boxes_from_masks
from ..base import Segmenter
from . import OPTIONS

DECODER_PAIRS = 64  # (image, prompt) pairs per decoder pass
MLP_CHUNK_BYTES = 16 * 2**20  # MLP hidden activations computed at a time (see _mlp_in_chunks)


def load(spec: ModelSpec, *, weights=None, config=None, device, dtype=None) -> "CLIPSegSegmenter":
    """Load a CLIPSeg model folder (HF snapshot or ``weights=`` path) with its processor.

    ``dtype`` 'auto' stays float32 even on CUDA: half precision moves logits by far more than the
    1e-4 segkit promises, so float16/bfloat16 are used only when asked for.
    """
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    from ...device import resolve_dtype
    from ...weights import resolve

    if config is not None:
        raise ConfigError(f"{config}: CLIPSeg reads its config from the weights folder; drop the config option")
    folder = resolve(spec, weights)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: CLIPSeg weights must be a model folder (config.json, weights, "
                              "tokenizer and preprocessor files), not a single file")
    torch_dtype = resolve_dtype(dtype, device, half_ok=False)
    try:
        with quiet_transformers():
            processor = CLIPSegProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: not a loadable CLIPSeg model folder ({first_line(exc)}); "
                              "pass a folder saved by CLIPSegForImageSegmentation and CLIPSegProcessor") from None
    model = from_pretrained(CLIPSegForImageSegmentation, folder, what="CLIPSeg model", dtype=torch_dtype)
    return CLIPSegSegmenter(spec, model.to(device).eval(), processor, device, torch_dtype)


class CLIPSegSegmenter(Segmenter):
    """Text- and image-prompted segmentation; ``.model`` is the transformers model, ``.processor`` its processor."""

    OPTIONS = OPTIONS

    def __init__(self, spec: ModelSpec, model, processor, device, dtype):
        super().__init__(spec, model, device, dtype)
        self.processor = processor
        self._prompt_cache: dict[tuple, object] = {}  # prompt -> embedding, for text and image prompts

    def logits(self, image, prompts=(), prompt_images=()):
        """Raw decoder logits (P, h, w) at the model's input size, as float32 on the CPU.

        Equal (to float rounding) to ``CLIPSegForImageSegmentation`` logits for each (image, prompt) pair.
        """
        _, texts, images = self._prompts(prompts, prompt_images)
        logits, _ = self._logits([as_rgb_array(image)], texts, images)
        return logits[0].float().cpu()

    def recorded_options(self, used: dict) -> dict:
        """Image prompts are recorded by label (their arrays are not JSON)."""
        _, named = _labelled_prompts(used["prompts"], used["prompt_images"])
        return {**used, "prompt_images": list(named)}

    def _predict_batch(self, rgbs, prompts, prompt_images, threshold, combine) -> list[Result]:
        """Results for uint8 RGB arrays, with one batched image encoding and prompts embedded once.

        heatmaps = sigmoid(logits) resized bilinearly to each image; masks = heatmaps > threshold;
        scores = each heatmap's maximum. With ``combine``, label_map gives each pixel 1 + the index of
        the prompt with the highest heatmap there, or 0 where no heatmap exceeds the threshold, and
        the masks are that partition (mask i = label_map == i + 1), so they never overlap.
        """
        import torch

        labels, texts, images = self._prompts(prompts, prompt_images)
        logits, timings = self._logits(rgbs, texts, images)
        start = time.perf_counter()
        results = []
        for rgb, image_logits in zip(rgbs, logits):
            with torch.inference_mode():
                heat = torch.sigmoid(image_logits.float())[None]
                heat = torch.nn.functional.interpolate(heat, size=rgb.shape[:2], mode="bilinear", align_corners=False)
            heatmaps = heat[0].cpu().numpy()
            results.append(self._result(heatmaps, labels, threshold, combine))
        timings["postprocess_s"] = time.perf_counter() - start
        share = {name: seconds / len(rgbs) for name, seconds in timings.items()}
        for result in results:
            result.meta["timings"] = dict(share)
        return results

    @staticmethod
    def _result(heatmaps: np.ndarray, labels: list[str], threshold: float, combine: bool) -> Result:
        label_map = None
        if combine:
            best = heatmaps.argmax(axis=0)
            label_map = np.where(heatmaps.max(axis=0) > threshold, best + 1, 0).astype(np.int32)
            masks = label_map[None] == np.arange(1, len(labels) + 1)[:, None, None]
        else:
            masks = heatmaps > threshold
        return Result(kind="prompted", masks=masks, labels=labels,
                      scores=heatmaps.reshape(len(labels), -1).max(axis=1), boxes=boxes_from_masks(masks),
                      label_map=label_map, heatmaps=heatmaps, class_names=list(labels),
                      class_ids=np.arange(len(labels)))

    def _prompts(self, prompts, prompt_images):
        """Labels, text prompts and image prompts (as RGB arrays)."""
        texts, named = _labelled_prompts(prompts, prompt_images)
        labels = texts + list(named)
        if not labels:
            raise OptionError("CLIPSeg needs at least one prompt: give prompts= or prompt_images=",
                              cli="CLIPSeg needs at least one prompt: give --prompt TEXT or --prompt-image PATH")
        return labels, texts, [as_rgb_array(image) for image in named.values()]

    def _logits(self, rgbs, texts, images):
        """Logits (P, h, w) per image (text prompts first, then image prompts) and stage timings."""
        import torch

        timings = {}
        with torch.inference_mode():
            start = time.perf_counter()
            pixels = self._pixel_values(rgbs)
            timings["preprocess_s"] = time.perf_counter() - start

            start = time.perf_counter()
            conditionals = torch.cat([self._text_embeddings(texts), self._image_prompt_embeddings(images)])
            timings["encode_prompts_s"] = time.perf_counter() - start

            start = time.perf_counter()
            activations = self._image_activations(pixels)
            timings["encode_images_s"] = time.perf_counter() - start

            start = time.perf_counter()
            logits = self._decode(activations, conditionals)
            timings["decode_s"] = time.perf_counter() - start
        return logits, timings

    def _pixel_values(self, rgbs):
        """The processor's own preprocessing (resize, rescale, normalise), once per image."""
        arrays = [rgb if rgb.flags.writeable else rgb.copy() for rgb in rgbs]  # torch wants writable memory
        pixels = self.processor.image_processor(images=arrays, input_data_format="channels_last",
                                                return_tensors="pt").pixel_values
        return pixels.to(self.device, self.dtype)

    def _text_embeddings(self, texts):
        """Projected text embeddings (P, D), each prompt computed once per segmenter.

        New prompts are padded only to the longest of them: the text encoder's causal mask means no
        token up to the end-of-text token (where CLIP pools) ever sees padding, so this equals padding to 77.
        """
        new = [text for text in dict.fromkeys(texts) if ("text", text) not in self._prompt_cache]
        if new:
            limit = self.model.config.text_config.max_position_embeddings
            tokens = self.processor.tokenizer(new, padding=True, truncation=True, max_length=limit,
                                              return_tensors="pt").to(self.device)
            embeds = self.model.clip.get_text_features(input_ids=tokens.input_ids,
                                                       attention_mask=tokens.attention_mask).pooler_output
            self._prompt_cache.update({("text", text): e for text, e in zip(new, embeds)})
        return self._stack([self._prompt_cache["text", text] for text in texts])

    def _image_prompt_embeddings(self, images):
        """Visual-prompt embeddings (P, D) as CLIPSeg computes them: the CLIP image embedding of the prompt image."""
        keys = [("image", hashlib.sha1(image.tobytes()).hexdigest(), image.shape) for image in images]
        new = {key: image for key, image in zip(keys, images) if key not in self._prompt_cache}
        if new:
            embeds = self.model.clip.get_image_features(self._pixel_values(list(new.values()))).pooler_output
            self._prompt_cache.update(zip(new, embeds))
        return self._stack([self._prompt_cache[key] for key in keys])

    def _stack(self, embeddings):
        import torch

        if not embeddings:
            return torch.zeros(0, self.model.config.projection_dim, device=self.device, dtype=self.dtype)
        return torch.stack(embeddings)

    def _image_activations(self, pixels):
        """Vision hidden states after each of ``config.extract_layers`` (in that order), for all images at once.

        Layers past the deepest extracted one only feed CLIP's pooled output, which segmentation never
        uses, so they are skipped.
        """
        vision = self.model.clip.vision_model
        wanted = self.model.config.extract_layers
        hidden = vision.pre_layrnorm(vision.embeddings(pixels, interpolate_pos_encoding=True))
        outputs = {}
        for index, layer in enumerate(vision.encoder.layers[: max(wanted) + 1]):
            hidden = _encoder_layer(layer, hidden)
            if index in wanted:
                outputs[index] = hidden
        return [outputs[index] for index in wanted]

    def _decode(self, activations, conditionals):
        """CLIPSeg's decoder for every (image, conditional) pair; returns logits (images, P, h, w).

        Same operations as ``CLIPSegDecoder.forward`` on the image repeated once per conditional, except
        that the per-layer reductions of the image features run once per image, and the pairs of all
        images run together (in chunks of DECODER_PAIRS), which keeps a busy CPU's threads in step.
        """
        import torch

        decoder = self.model.decoder
        reduced = [reduce(activation) for activation, reduce in zip(activations[::-1], decoder.reduces)]
        images, prompts = len(activations[0]), len(conditionals)
        pair = torch.arange(images * prompts, device=conditionals.device)
        chunks = []
        for first in range(0, len(pair), DECODER_PAIRS):
            chunk = pair[first:first + DECODER_PAIRS]
            image, prompt = chunk // prompts, chunk % prompts
            cond = conditionals[prompt]
            output = None
            for index, (features, layer) in enumerate(zip(reduced, decoder.layers)):
                output = features[image] if output is None else features[image] + output
                if index == decoder.conditional_layer:
                    output = decoder.film_mul(cond)[:, None] * output + decoder.film_add(cond)[:, None]
                output = _decoder_layer(layer, output)
            output = output[:, 1:, :].transpose(1, 2)
            side = int(round(output.shape[2] ** 0.5))
            output = output.reshape(len(chunk), output.shape[1], side, side)
            chunks.append(decoder.transposed_convolution(output)[:, 0])
        logits = torch.cat(chunks)
        return logits.view(images, prompts, *logits.shape[1:])


def _labelled_prompts(prompts, prompt_images) -> tuple[list[str], Mapping]:
    """Text prompts as a list, and image prompts as {label: image}.

    Image prompts given as paths are labelled by file stem, other images ``image-N``; a mapping
    {label: image} names them itself (the CLI passes images it decoded once, by stem).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompt_images, (str, os.PathLike, np.ndarray)):
        prompt_images = [prompt_images]
    if not isinstance(prompt_images, Mapping):
        prompt_images = label_prompt_images(prompt_images)
    return [str(p) for p in prompts], {str(label): image for label, image in prompt_images.items()}


def label_prompt_images(images) -> dict:
    """{label: image} for image prompts: a path's stem (made unique), else ``image-N``."""
    labelled = {}
    for number, image in enumerate(images, start=1):
        label = Path(image).stem if isinstance(image, (str, os.PathLike)) else f"image-{number}"
        unique, k = label, 2
        while unique in labelled:
            unique, k = f"{label}-{k}", k + 1
        labelled[unique] = image
    return labelled


def _encoder_layer(layer, hidden):
    """``CLIPSegEncoderLayer`` (pre-norm) with its MLP run in chunks; the same numbers."""
    hidden = hidden + layer.self_attn(layer.layer_norm1(hidden))[0]
    return hidden + _mlp_in_chunks(layer.mlp, layer.layer_norm2(hidden))


def _decoder_layer(layer, hidden):
    """``CLIPSegDecoderLayer`` (post-norm) with its MLP run in chunks; the same numbers."""
    hidden = layer.layer_norm1(hidden + layer.self_attn(hidden)[0])
    return layer.layer_norm2(hidden + _mlp_in_chunks(layer.mlp, hidden))


def _mlp_in_chunks(mlp, hidden):
    """``mlp(hidden)`` a few samples at a time (samples are independent, so the result is identical).

    The MLP's hidden activations are 4x wider than its input; for a whole batch they run to hundreds
    of MB, which the allocator maps fresh (and the kernel zero-fills) for every layer. Chunks of
    MLP_CHUNK_BYTES are reused instead, which made the image encoder ~10% and the decoder ~40%
    faster on a 2-core CPU.
    """
    import torch

    per_sample = hidden[0].numel() // hidden.shape[-1] * mlp.fc1.out_features * hidden.element_size()
    step = max(1, MLP_CHUNK_BYTES // per_sample)
    if step >= len(hidden):
        return mlp(hidden)
    return torch.cat([mlp(part) for part in hidden.split(step)])
