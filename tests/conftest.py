"""Shared test fixtures: reference data in tests/fixtures, offline hub, small helpers."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Reference data kept in the repository (each tests/fixtures/<name>/README.md says where it comes from)."""
    return FIXTURES


@pytest.fixture(scope="session")
def cutler_dir(fixtures_dir) -> Path:
    """Tiny CutLER checkpoints, configs, images and detectron2's outputs for them."""
    return fixtures_dir / "cutler"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The photos shipped in examples/."""
    return REPO / "examples"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep the suite polite on a 2-core machine."""
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass
