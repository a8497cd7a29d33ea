"""Tiny models built on the fly, so tests never need a model hub.

The CLIPSeg helpers write a real Hugging Face folder (config, weights, tokenizer, image processor)
that segkit loads through its ordinary code path via ``weights=``; ``tiny_oneformer`` returns a
model to ``save_pretrained`` into one.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIPSEG_WORDS = ("a", "cat", "dog", "grass", "sky", "photo", "of", "the", "rocket", "cup", "coffee", "person")


def write_clip_vocab(folder, words) -> int:
    """Write vocab.json + merges.txt of a CLIP byte-level BPE that spells each word as one token.

    Like CLIP's own vocabulary: every byte symbol alone and with the end-of-word mark ``</w>``,
    then one merge chain per word (left to right), then ``<|startoftext|>``/``<|endoftext|>`` last,
    so the end token has the highest id (CLIPSeg pools the text at the highest id).
    Other text still tokenizes, symbol by symbol. Returns the vocabulary size.
    """
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in dict.fromkeys(w.lower() for w in words):
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            right = char + "</w>" if last else char
            merged = piece + right
            if merged not in vocab:
                merges.append(f"{piece} {right}")
                vocab[merged] = len(vocab)
            piece = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def tiny_clipseg_config(vocab_size: int, refined: bool = True):
    """A CLIPSeg small enough for tests, shaped like the real one.

    Vision: 4 layers with features taken after layers 1 and 2 (so the last layer is unused, as in
    the real model), patch 16 at a trained size of 48 px, run at 64 px (so position embeddings
    are interpolated, as the real model interpolates 224 -> 352). Text pooling uses the legacy
    highest-id rule (eos_token_id 2) exactly like the published CLIPSeg configs.
    """
    from transformers import CLIPSegConfig

    return CLIPSegConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=2),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                           image_size=48, patch_size=16),
        projection_dim=24,
        extract_layers=(1, 2),
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        use_complex_transposed_convolution=refined,
    )


def save_clipseg(folder, config, image_size: int, seed: int = 0) -> Path:
    """Save a randomly initialised CLIPSeg and its processor into ``folder`` (which holds the vocab files)."""
    import torch
    from transformers import (CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer,
                              ViTImageProcessor)

    folder = Path(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    image_processor = ViTImageProcessor(
        do_resize=True, size={"height": image_size, "width": image_size}, resample=2,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config).eval()
    _realistic_decoder_scale(model)
    model.save_pretrained(folder)
    return folder


def make_tiny_clipseg(folder, refined: bool = True, words=TINY_CLIPSEG_WORDS) -> Path:
    """A tiny CLIPSeg folder loadable with ``segkit.load("clipseg", weights=folder)``."""
    vocab_size = write_clip_vocab(folder, words)
    return save_clipseg(folder, tiny_clipseg_config(vocab_size, refined), image_size=64)


def _realistic_decoder_scale(model, logit_gain: float = 30.0) -> None:
    """Make random logits look like trained ones (within about +-10, heatmaps spread over 0..1).

    transformers initialises the decoder with std-1 weights (logits in the thousands, where a 1e-4
    tolerance means nothing); PyTorch's fan-in init gives logits near 0.2 (every heatmap ~0.5).
    So: PyTorch's init, then a gain on the last layer.
    """
    import torch

    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.reset_parameters()
        last = model.decoder.transposed_convolution
        last = last[-1] if isinstance(last, torch.nn.Sequential) else last
        last.weight.mul_(logit_gain)


def tiny_oneformer(names, num_queries=20, seed=0):
    """A random OneFormer with a small Swin backbone whose queries differ, as trained ones do."""
    import torch
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                      drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = OneFormerConfig(
        backbone_config=swin, num_queries=num_queries,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        conv_dim=32, mask_dim=32, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, text_encoder_width=32,
        text_encoder_num_layers=1, text_encoder_proj_layers=1, query_dec_layers=1,
        is_training=False, output_auxiliary_logits=False)
    torch.manual_seed(seed)
    model = OneFormerForUniversalSegmentation(config).eval()
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # distinct queries, confident classes, masks with clear edges
        queries = params["model.transformer_module.queries_embedder.weight"]
        queries.copy_(torch.randn(queries.shape, generator=gen) * 3)
        classes = params["model.transformer_module.decoder.class_embed.weight"]
        classes.copy_(torch.randn(classes.shape, generator=gen) * 3)
        params["model.transformer_module.decoder.mask_embed.layers.2.0.weight"].mul_(40)
    return model
