"""Shared fixtures: tiny image folders made with PIL (no real data, no network)."""

from pathlib import Path

import pytest
from PIL import Image


def _write_image(path: Path, color=(200, 40, 40), size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def make_image():
    """``make_image(path, color=(r, g, b), size=(w, h))`` writes a solid-colour image; format from suffix."""
    return _write_image


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """An ImageFolder-style directory: classes ``cats`` (4 images) and ``dogs`` (3 images), 8x8 pixels."""
    root = tmp_path / "tiny"
    for index in range(4):
        _write_image(root / "cats" / f"cat{index}.jpg", color=(200, 10 * index, 40))
    for index in range(3):
        _write_image(root / "dogs" / f"dog{index}.png", color=(30, 10 * index, 220))
    return root
