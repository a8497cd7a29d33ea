"""Shared test fixtures: paths to ../shared, offline hub, small helpers."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGKIT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder of fixtures and photos; tests skip when it is absent."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):  # CI always has the fixtures: a missing folder must not pass silently
            pytest.fail(f"shared fixtures not found at {SHARED} (set SEGKIT_SHARED)")
        pytest.skip(f"shared fixtures not found at {SHARED} (set SEGKIT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The photos shipped in examples/ (the same as ../shared/images), so photo tests never skip."""
    return REPO / "examples"


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir) -> Path:
    return shared_dir / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep the suite polite on a 2-core machine."""
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass
