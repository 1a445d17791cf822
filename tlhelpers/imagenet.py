"""ImageNet predictions: preprocessing a photo and reading the top-k classes."""

from __future__ import annotations

import torch

from .utils import reference_implementation


@reference_implementation
def preprocess(image, weights) -> torch.Tensor:
    """Turn a PIL image into the batched float tensor [1, 3, H, W] that ``weights`` expects.

    Reference solution of exercise 1 in 01_imagenet_features.
    """
    return weights.transforms()(image).unsqueeze(0)


@reference_implementation
def top_k(logits: torch.Tensor, categories, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable ``(category, probability)`` pairs, highest first.

    ``logits`` has shape [C] or [1, C]; probabilities come from a softmax.
    Reference solution of exercise 2 in 01_imagenet_features.
    """
    probabilities = torch.softmax(logits.detach().reshape(-1).float(), dim=0)
    values, indices = probabilities.topk(k)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
