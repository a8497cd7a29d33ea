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

TASKS = ("semantic", "instance", "panoptic")


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
