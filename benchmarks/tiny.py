"""A tiny stand-in backbone and image folder, so the benchmark code runs in seconds (tests, --tiny)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from tlhelpers.models import Backbone

TINY_SIZE = 16
TINY_MEAN = TINY_STD = (0.5, 0.5, 0.5)


class TinyNet(nn.Module):
    """A two-layer CNN shaped like a torchvision classifier: ``features`` then a Linear ``fc``."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


def tiny_backbone(seed: int = 0) -> Backbone:
    """A randomly initialised ``TinyNet`` wrapped as a ``Backbone`` (eval preprocessing to 16x16)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyNet().eval()
    transforms = T.Compose(
        [T.Resize(TINY_SIZE), T.CenterCrop(TINY_SIZE), T.ToTensor(), T.Normalize(TINY_MEAN, TINY_STD)]
    )
    return Backbone(
        name="tiny-cnn (synthetic, for tests)",
        model=model,
        categories=[f"class {index}" for index in range(10)],
        transforms=transforms,
        mean=TINY_MEAN,
        std=TINY_STD,
        input_size=TINY_SIZE,
        head_name="fc",
        reason="--tiny mode",
    )


def make_tiny_image_folder(root: Path, per_class: int = 8, val_per_class: int = 4, seed: int = 0) -> Path:
    """Write ``root/train`` and ``root/val`` with classes ``ants`` (reddish) and ``bees`` (bluish).

    Images are 24x24 noisy colour patches, easy to tell apart; returns ``root``.
    """
    generator = torch.Generator().manual_seed(seed)
    base_colours = {"ants": torch.tensor([180.0, 60.0, 40.0]), "bees": torch.tensor([40.0, 70.0, 190.0])}
    for split, count in (("train", per_class), ("val", val_per_class)):
        for class_name, colour in base_colours.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                noise = torch.randn(24, 24, 3, generator=generator) * 25
                pixels = (colour + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{class_name}{index}.png")
    return root
