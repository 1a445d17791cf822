"""`python -m tlhelpers.demo` (`make demo`): the course's core idea end to end.

A couple of minutes on a CPU (most of it extracting features), seconds on a GPU.

An ImageNet-pretrained backbone, frozen, turns every ants/bees photo into a feature vector once;
a linear head trained on those vectors then tells ants from bees. Features are cached in the user
cache folder (``$TL_CACHE`` or ``~/.cache/tlhelpers``), so a second run skips the slow part.
Nothing is written to the repository.
"""

from __future__ import annotations

import sys
import time

from .data import DataError, DataNotFoundError, eval_transforms, load_hymenoptera
from .models import headless, load_pretrained
from .training import extract_features, feature_cache_dir, train_linear_head
from .utils import pick_device, set_seed

TARGET_ACCURACY = 0.93
HEAD_EPOCHS = 30
HEAD_LR = 1e-3


def run_demo() -> float:
    """Train a linear head on frozen features and return its validation accuracy, printing each step.

    The command-line demo (``make demo``); the same steps are taught in 04_training_the_head.
    """
    set_seed(0)
    device = pick_device(verbose=True)
    backbone = load_pretrained()
    print(f"Backbone: {backbone.name}, {backbone.feature_dim} features per image (why: {backbone.reason})")

    # Features are computed once, so the training images get the evaluation preprocessing:
    # random augmentation would be frozen into the cache anyway.
    preprocessing = eval_transforms(backbone)
    splits = load_hymenoptera(train_transform=preprocessing, eval_transform=preprocessing)
    print(
        f"Data: {splits.root}: {len(splits.train)} training and {len(splits.val)} validation images, "
        f"classes {', '.join(splits.classes)}"
    )

    feature_model = headless(backbone.model)
    started = time.perf_counter()
    train_features, train_labels = extract_features(
        feature_model, splits.train, device, cache_key=f"hymenoptera-train-{backbone.name}"
    )
    val_features, val_labels = extract_features(
        feature_model, splits.val, device, cache_key=f"hymenoptera-val-{backbone.name}"
    )
    extraction_seconds = time.perf_counter() - started
    num_images = len(train_features) + len(val_features)
    print(
        f"Feature extraction: {extraction_seconds:.1f} s for {num_images} images "
        f"(cached in {feature_cache_dir()}; the next run reads them back)"
    )

    started = time.perf_counter()
    head, history = train_linear_head(
        train_features, train_labels, val_features, val_labels, epochs=HEAD_EPOCHS, lr=HEAD_LR, seed=0
    )
    print(
        f"Head training: {time.perf_counter() - started:.1f} s "
        f"({HEAD_EPOCHS} epochs of Adam on Linear({head.in_features}, {head.out_features}), CPU)"
    )
    accuracy = history.val_acc[-1]
    print(f"Validation accuracy of a linear head on frozen {backbone.name} features: {accuracy:.3f}")
    return accuracy


def main() -> None:
    """Run the demo; exit with status 1 and say why when it fails or misses the target accuracy."""
    started = time.perf_counter()
    try:
        accuracy = run_demo()
    except (DataError, DataNotFoundError) as error:
        sys.exit(f"Demo stopped: {error}")
    print(f"Total: {time.perf_counter() - started:.1f} s")
    if accuracy < TARGET_ACCURACY:
        sys.exit(
            f"Demo FAILED: validation accuracy {accuracy:.3f} is below the target {TARGET_ACCURACY:.2f}. "
            "Delete the feature cache and run again; if it persists, the backbone weights or the data differ."
        )
    print(f"OK: {accuracy:.3f} >= target {TARGET_ACCURACY:.2f}")


if __name__ == "__main__":
    main()
