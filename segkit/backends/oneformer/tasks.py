"""The task token: OneFormer picks semantic / instance / panoptic from the text "the task is …".

transformers' ``OneFormerProcessor`` tokenises that text with CLIP's BPE tokenizer and pads it
with zeros to ``config.task_seq_len``. The ids of the three texts ship in
``segkit/data/oneformer_task_tokens.json`` so no tokenizer has to be downloaded; a checkpoint
folder that brings its own tokenizer files is tokenised with those instead.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ...errors import CheckpointError, ConfigError
from . import TASKS


def task_text(task: str) -> str:
    return f"the task is {task}"


def has_tokenizer(folder: Path) -> bool:
    """Whether a checkpoint folder carries CLIP tokenizer files."""
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def shipped_ids() -> dict[str, list[int]]:
    """The unpadded ids of each task text, as shipped with segkit."""
    text = resources.files("segkit").joinpath("data", "oneformer_task_tokens.json").read_text(encoding="utf-8")
    return json.loads(text)["ids"]


def _tokenizer_ids(folder: Path, seq_len: int) -> dict[str, list[int]]:
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise CheckpointError(
            f"{folder}: its tokenizer files could not be read ({type(exc).__name__}); "
            "remove them to use segkit's built-in task tokens, or fix the folder") from None
    encoded = tokenizer([task_text(t) for t in TASKS], padding="max_length", max_length=seq_len, truncation=True)
    return {task: [i * m for i, m in zip(ids, mask)]
            for task, ids, mask in zip(TASKS, encoded["input_ids"], encoded["attention_mask"])}


def task_token_ids(folder: Path | None, seq_len: int) -> dict[str, list[int]]:
    """Padded task-token ids for each task, as OneFormerProcessor would make them for this checkpoint."""
    if folder is not None and has_tokenizer(folder):
        return _tokenizer_ids(folder, seq_len)
    padded = {}
    for task, ids in shipped_ids().items():
        if len(ids) > seq_len:
            raise ConfigError(
                f"config task_seq_len={seq_len} is shorter than the {len(ids)} tokens of {task_text(task)!r}; "
                "use the checkpoint's own config.json")
        padded[task] = ids + [0] * (seq_len - len(ids))
    return padded


class ExactTaskTokens:
    """Keeps OneFormer's task token exact when the model runs in float16 or bfloat16.

    transformers feeds the task ids to the task MLP as *values*, cast to the model's dtype first:
    ids near 49406 become multiples of 32 in float16 (of 256 in bfloat16), so every task token
    would come from different numbers than in float32. Built while the model is still float32,
    this computes the tokens from the exact ids; once installed, the MLP answers its (rounded)
    inputs with them.
    """

    def __init__(self, task_mlp, task_ids: dict):
        import torch

        self.task_mlp = task_mlp
        with torch.no_grad():
            self.exact = [(ids, task_mlp(ids.float())) for ids in task_ids.values()]
        self._forward = task_mlp.forward
        self.table = []

    def install(self, dtype, device) -> None:
        """Call after the model moved to ``dtype`` and ``device``."""
        self.table = [(ids.to(device=device, dtype=dtype), token.to(device=device, dtype=dtype))
                      for ids, token in self.exact]
        self.task_mlp.forward = self.forward

    def forward(self, inputs):
        for rounded, token in self.table:
            if rounded.shape == inputs.shape and bool((rounded == inputs).all()):
                return token
        return self._forward(inputs)
