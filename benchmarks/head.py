"""Benchmark 1: training a new head on a frozen backbone, the textbook loop against cached features.

Both paths train the same ``nn.Linear`` head (same initial weights, same seed, same batches in the
same order, same Adam settings, same number of epochs) on the same eval-preprocessed images. They
differ only in where the head's inputs come from:

* textbook: the whole model (frozen backbone + new head) runs on every image of every epoch;
* package: ``tl.extract_features`` runs the backbone once over train and val, then
  ``tl.train_linear_head`` trains the head on the cached feature vectors.

The textbook loop keeps the frozen backbone in eval mode, so both paths compute the same function
and any accuracy difference is floating-point noise; it validates once, after the last epoch (the
package path validates every epoch on cached features, which costs next to nothing).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlhelpers.models import build_feature_extractor, find_head, headless, trainable_parameters
from tlhelpers.training import evaluate, extract_features, train_linear_head

from .measure import PeakMemory, Stopwatch

SPEEDUP_TARGET = 10.0
# "Equal accuracy": the cached path may trail the textbook loop by at most one percentage point.
ACCURACY_TOLERANCE = 0.01


def seeded_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    """The head both paths start from: made exactly as ``train_linear_head`` makes its own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, num_classes)


def train_textbook(
    backbone_model: nn.Module,
    train_set,
    val_set,
    num_classes: int,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    device: torch.device,
) -> dict:
    """The plain loop: frozen backbone and new head, the backbone runs forward on every batch."""
    model = build_feature_extractor(copy.deepcopy(backbone_model), num_classes)
    head_name, head = find_head(model)
    head.load_state_dict(seeded_head(head.in_features, num_classes, seed).state_dict())
    model.to(device).eval()
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(val_set, batch_size=batch_size)
    epoch_seconds = []
    with PeakMemory(device) as memory, Stopwatch(device) as total:
        for _ in range(epochs):
            with Stopwatch(device) as epoch:
                for images, labels in loader:
                    images, labels = images.to(device), labels.to(device)
                    optimizer.zero_grad()
                    loss = loss_fn(model(images), labels)
                    loss.backward()
                    optimizer.step()
            epoch_seconds.append(epoch.seconds)
        with Stopwatch(device) as validation:
            # evaluate() switches to eval mode, which the frozen backbone is in anyway.
            accuracy = evaluate(model, val_loader, device)
    return {
        "val_acc": accuracy,
        "seconds": total.seconds,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "validation_seconds": validation.seconds,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_method": memory.method,
        "head": head_name,
    }


def train_cached(
    backbone_model: nn.Module,
    train_set,
    val_set,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    device: torch.device,
) -> dict:
    """The package path: extract features once (no cache on disk: the cold cost), then train the head."""
    feature_model = headless(backbone_model)
    with PeakMemory(device) as memory, Stopwatch(device) as total:
        with Stopwatch(device) as extraction:
            train_features, train_labels = extract_features(feature_model, train_set, device, progress=False)
            val_features, val_labels = extract_features(feature_model, val_set, device, progress=False)
        with Stopwatch(device) as head_training:
            _, history = train_linear_head(
                train_features,
                train_labels,
                val_features,
                val_labels,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                seed=seed,
                device=device,
            )
    return {
        "val_acc": history.val_acc[-1],
        "seconds": total.seconds,
        "extraction_seconds": extraction.seconds,
        "head_seconds": head_training.seconds,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_method": memory.method,
        "feature_dim": train_features.shape[1],
    }


def epochs_for_speedup(textbook: dict, cached: dict, epochs: int, target: float = SPEEDUP_TARGET):
    """The fewest epochs at which the measured costs give ``target``x (None if never).

    textbook(E) = E * seconds_per_epoch + validation; cached(E) = extraction + E * head seconds per epoch.
    """
    head_per_epoch = cached["head_seconds"] / epochs
    gain_per_epoch = textbook["seconds_per_epoch"] - target * head_per_epoch
    if gain_per_epoch <= 0:
        return None
    needed = (target * cached["extraction_seconds"] - textbook["validation_seconds"]) / gain_per_epoch
    return max(1, int(-(-needed // 1)))


def benchmark_head(
    backbone,
    train_set,
    val_set,
    *,
    epochs: int = 30,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-3,
    device=None,
) -> dict:
    """Run both paths one after the other in this process and compare them.

    ``backbone`` is a ``tlhelpers.Backbone``; ``train_set`` and ``val_set`` are datasets of
    (eval-preprocessed image, label). Returns a JSON-friendly dict with both accuracies, both wall
    times, the speed-up and PASS/MISS against the 10x-at-equal-accuracy target.
    """
    device = torch.device(device or "cpu")
    num_classes = len(train_set.classes)
    settings = dict(epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, device=device)
    textbook = train_textbook(backbone.model, train_set, val_set, num_classes, **settings)
    cached = train_cached(backbone.model, train_set, val_set, **settings)
    speedup = textbook["seconds"] / cached["seconds"]
    equal_accuracy = cached["val_acc"] >= textbook["val_acc"] - ACCURACY_TOLERANCE
    return {
        "settings": {
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": "Adam",
            "train_images": len(train_set),
            "val_images": len(val_set),
            "transforms": "the backbone's eval preprocessing for train and val",
        },
        "textbook": textbook,
        "cached": cached,
        "speedup": speedup,
        "accuracy_difference": cached["val_acc"] - textbook["val_acc"],
        "epochs_for_target": epochs_for_speedup(textbook, cached, epochs),
        "targets": [
            {
                "target": f"cached path >= {SPEEDUP_TARGET:g}x faster than the textbook loop",
                "measured": f"{speedup:.1f}x",
                "passed": speedup >= SPEEDUP_TARGET,
            },
            {
                "target": f"at equal accuracy (cached at most {ACCURACY_TOLERANCE * 100:g} point below)",
                "measured": f"{cached['val_acc']:.3f} vs {textbook['val_acc']:.3f}",
                "passed": equal_accuracy,
            },
        ],
        "passed": bool(speedup >= SPEEDUP_TARGET and equal_accuracy),
    }
