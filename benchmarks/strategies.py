"""Benchmark 2: five ways to train a classifier on the ants-vs-bees images, and how much data they need.

Strategies (every one ends with a new 2-class head and is scored on the whole validation set after
its last epoch; no picking the best epoch on validation data):

* ``scratch``: the same architecture, every layer re-initialised (PyTorch default inits), all
  trained at ``scratch_lr`` for ``finetune_epochs`` with training augmentation;
* ``feature_extraction``: frozen backbone, features extracted once (eval preprocessing), a linear
  head trained on them for ``head_epochs`` (``tl.extract_features`` + ``tl.train_linear_head``);
* ``fine_tuning``: pretrained weights and a new head, everything trained at ``finetune_lr``;
* ``discriminative``: like fine-tuning, but the head learns at ``head_lr`` and the backbone at
  ``finetune_lr`` (``tl.param_groups``);
* ``two_stage``: ``feature_extraction`` first, then its trained head goes on the backbone and
  everything is fine-tuned exactly as in ``fine_tuning`` (so the two differ only in the head's start).

``scratch`` and the three fine-tuning variants get the same number of epochs.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlhelpers.models import count_parameters, find_head, headless, param_groups, replace_head
from tlhelpers.training import evaluate, extract_features, fit, train_linear_head
from tlhelpers.utils import set_seed

from .head import seeded_head
from .measure import PeakMemory, Stopwatch

STRATEGIES = ("scratch", "feature_extraction", "fine_tuning", "discriminative", "two_stage")
FINE_TUNING_VARIANTS = ("fine_tuning", "discriminative", "two_stage")
FEATURE_EXTRACTION_TARGET = 0.95
# "Clearly worse": scratch's mean accuracy at least this far below feature extraction's.
SCRATCH_MARGIN = 0.10


@dataclass
class StrategySettings:
    """Budgets and learning rates of the strategy comparison (recorded with the results)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_epochs: int = 5
    head_epochs: int = 30
    batch_size: int = 32
    scratch_lr: float = 1e-3
    head_lr: float = 1e-3
    finetune_lr: float = 1e-4
    # End-to-end training: random resized crops and flips, and BatchNorm statistics that keep updating.
    augment: bool = True
    freeze_bn: bool = False


def _with_new_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    replace_head(model, num_classes)
    _, head = find_head(model)
    head.load_state_dict(seeded_head(head.in_features, num_classes, seed).state_dict())
    return model


def _reinitialise(model: nn.Module, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


def _train_full(model, optimizer, data, settings, seed, device) -> float:
    loader = DataLoader(
        data["train_augmented" if settings.augment else "train_plain"],
        batch_size=settings.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    fit(
        model,
        loader,
        None,
        optimizer,
        epochs=settings.finetune_epochs,
        device=device,
        freeze_bn=settings.freeze_bn,
        progress=False,
    )
    return evaluate(model, DataLoader(data["val"], batch_size=settings.batch_size), device)


def _linear_head(backbone_model, data, settings, seed, device):
    feature_model = headless(backbone_model)
    train_features, train_labels = extract_features(
        feature_model, data["train_plain"], device, progress=False
    )
    val_features, val_labels = extract_features(feature_model, data["val"], device, progress=False)
    return train_linear_head(
        train_features,
        train_labels,
        val_features,
        val_labels,
        epochs=settings.head_epochs,
        lr=settings.head_lr,
        batch_size=settings.batch_size,
        seed=seed,
        device=device,
    )


def run_strategy(name: str, backbone_model: nn.Module, data: dict, settings: StrategySettings, seed, device):
    """Train one strategy once from the pretrained ``backbone_model`` (left untouched); measure it."""
    num_classes = data["num_classes"]
    set_seed(seed)  # training augmentation draws from the global generators
    with PeakMemory(device) as memory, Stopwatch(device) as watch:
        if name == "feature_extraction":
            head, history = _linear_head(backbone_model, data, settings, seed, device)
            accuracy = history.val_acc[-1]
            trainable = sum(p.numel() for p in head.parameters())
        elif name == "two_stage":
            head, _ = _linear_head(backbone_model, data, settings, seed, device)
            model = copy.deepcopy(backbone_model)
            replace_head(model, num_classes)
            find_head(model)[1].load_state_dict(head.state_dict())
            for parameter in model.parameters():
                parameter.requires_grad = True
            trainable = count_parameters(model)[0]
            optimizer = torch.optim.Adam(model.parameters(), lr=settings.finetune_lr)
            accuracy = _train_full(model, optimizer, data, settings, seed, device)
        else:
            model = copy.deepcopy(backbone_model)
            if name == "scratch":
                _reinitialise(model, seed)
            _with_new_head(model, num_classes, seed)
            for parameter in model.parameters():
                parameter.requires_grad = True
            trainable = count_parameters(model)[0]
            if name == "scratch":
                optimizer = torch.optim.Adam(model.parameters(), lr=settings.scratch_lr)
            elif name == "fine_tuning":
                optimizer = torch.optim.Adam(model.parameters(), lr=settings.finetune_lr)
            elif name == "discriminative":
                groups = param_groups(model, head_lr=settings.head_lr, backbone_lr=settings.finetune_lr)
                optimizer = torch.optim.Adam(groups)
            else:
                raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
            accuracy = _train_full(model, optimizer, data, settings, seed, device)
    return {
        "seed": seed,
        "val_acc": accuracy,
        "seconds": watch.seconds,
        "trainable_parameters": trainable,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_method": memory.method,
    }


def _summary(runs: list[dict]) -> dict:
    accuracies = [run["val_acc"] for run in runs]
    return {
        "val_acc_mean": statistics.fmean(accuracies),
        "val_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "seconds_mean": statistics.fmean(run["seconds"] for run in runs),
        "trainable_parameters": runs[0]["trainable_parameters"],
        "peak_memory_bytes": max(run["peak_memory_bytes"] for run in runs),
        "runs": runs,
    }


def _targets(results: dict) -> list[dict]:
    """PASS/MISS for each target that the strategies measured in ``results`` can decide."""
    targets = []
    extraction = results.get("feature_extraction")
    if extraction is None:
        return targets
    mean = extraction["val_acc_mean"]
    targets.append(
        {
            "target": f"feature extraction mean val acc >= {FEATURE_EXTRACTION_TARGET}",
            "measured": f"{mean:.3f}",
            "passed": mean >= FEATURE_EXTRACTION_TARGET,
        }
    )
    for name in FINE_TUNING_VARIANTS:
        if name in results:
            variant = results[name]["val_acc_mean"]
            targets.append(
                {
                    "target": f"{name} mean val acc >= feature extraction's",
                    "measured": f"{variant:.3f} vs {mean:.3f}",
                    "passed": variant >= mean,
                }
            )
    if "scratch" in results:
        scratch = results["scratch"]["val_acc_mean"]
        targets.append(
            {
                "target": f"scratch clearly worse (>= {SCRATCH_MARGIN:.2f} below feature extraction)",
                "measured": f"{scratch:.3f} vs {mean:.3f}",
                "passed": scratch <= mean - SCRATCH_MARGIN,
            }
        )
    return targets


def benchmark_strategies(
    backbone,
    train_augmented,
    train_plain,
    val,
    *,
    settings: StrategySettings | None = None,
    strategies=STRATEGIES,
    device=None,
    log=print,
) -> dict:
    """Run every strategy for every seed of ``settings``; mean, std and costs per strategy.

    ``train_augmented`` (training augmentation), ``train_plain`` and ``val`` (eval preprocessing)
    are datasets of the same images with labels; ``backbone`` is a ``tlhelpers.Backbone``.
    """
    settings = settings or StrategySettings()
    device = torch.device(device or "cpu")
    data = {
        "train_augmented": train_augmented,
        "train_plain": train_plain,
        "val": val,
        "num_classes": len(train_plain.classes),
    }
    results = {}
    for name in strategies:
        runs = []
        for seed in settings.seeds:
            run = run_strategy(name, backbone.model, data, settings, seed, device)
            log(f"  {name:18s} seed {seed}: val acc {run['val_acc']:.3f} in {run['seconds']:.0f} s")
            runs.append(run)
        results[name] = _summary(runs)
    return {
        "settings": asdict(settings) | {"train_images": len(train_plain), "val_images": len(val)},
        "strategies": results,
        "targets": _targets(results),
        "passed": all(target["passed"] for target in _targets(results)),
    }


DIAGNOSIS_VARIANTS = {
    "as in section 2 (augmentation, BatchNorm statistics updating)": {},
    "BatchNorm frozen (tl.freeze_batchnorm every epoch)": {"freeze_bn": True},
    "no augmentation (eval preprocessing for training)": {"augment": False},
    "BatchNorm frozen and no augmentation": {"freeze_bn": True, "augment": False},
    "fine-tuning learning rate 10x lower again": {"finetune_lr": StrategySettings.finetune_lr / 10},
}


def benchmark_finetune_diagnosis(
    backbone,
    train_augmented,
    train_plain,
    val,
    *,
    settings: StrategySettings | None = None,
    strategy: str = "two_stage",
    device=None,
    log=print,
) -> dict:
    """Why does fine-tuning trail feature extraction? Re-run ``strategy`` changing one thing at a time.

    Each variant of ``DIAGNOSIS_VARIANTS`` flips BatchNorm freezing, training augmentation or the
    fine-tuning learning rate; everything else (epochs, seeds) is ``settings``. The default,
    ``two_stage``, starts fine-tuning from the trained linear head, so whatever it loses against
    feature extraction is lost by changing the backbone.
    """
    settings = settings or StrategySettings()
    device = torch.device(device or "cpu")
    data = {
        "train_augmented": train_augmented,
        "train_plain": train_plain,
        "val": val,
        "num_classes": len(train_plain.classes),
    }
    variants = {}
    for label, changes in DIAGNOSIS_VARIANTS.items():
        variant_settings = replace(settings, **changes)
        runs = []
        for seed in settings.seeds:
            run = run_strategy(strategy, backbone.model, data, variant_settings, seed, device)
            log(f"  {label}, seed {seed}: val acc {run['val_acc']:.3f} in {run['seconds']:.0f} s")
            runs.append(run)
        variants[label] = _summary(runs)
    return {
        "strategy": strategy,
        "settings": asdict(settings) | {"train_images": len(train_plain), "val_images": len(val)},
        "variants": variants,
    }


def _per_class_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class, drawn with ``seed`` (all of them for None)."""
    if per_class is None:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


# Head settings tried by the ceiling diagnosis: learning rate, weight decay, epochs.
CEILING_GRID = [(lr, wd, epochs) for lr in (1e-4, 1e-3, 1e-2) for wd in (0.0, 1e-2) for epochs in (30, 100)]


def head_ceiling(
    train_features, train_labels, val_features, val_labels, *, batch_size=32, device=None
) -> dict:
    """The best final validation accuracy of a linear head over ``CEILING_GRID`` (seed 0).

    Chosen on the validation set itself, so it is optimistic: an upper bound for what tuning the
    head could do with these features, used only to explain a missed target, never to pass one.
    """
    best = None
    for lr, weight_decay, epochs in CEILING_GRID:
        _, history = train_linear_head(
            train_features,
            train_labels,
            val_features,
            val_labels,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            device=device,
        )
        if best is None or history.val_acc[-1] > best["val_acc"]:
            best = {"val_acc": history.val_acc[-1], "lr": lr, "weight_decay": weight_decay, "epochs": epochs}
    return best | {"settings_tried": len(CEILING_GRID)}


def benchmark_data_efficiency(
    backbone,
    train_plain,
    val,
    *,
    per_class=(5, 10, 25, 50, None),
    seeds=(0, 1, 2, 3, 4),
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    device=None,
) -> dict:
    """Feature-extraction accuracy when the head sees only ``per_class`` training images per class.

    Features are extracted once; every (size, seed) trains a fresh linear head on a seeded subset
    and is scored on the whole validation set. Every subset gets the optimizer steps of ``epochs``
    epochs over the full training set, so small subsets are not also short of training.
    Sizes above the smallest class are left out (``None`` means every image).
    """
    device = torch.device(device or "cpu")
    feature_model = headless(backbone.model)
    train_features, train_labels = extract_features(feature_model, train_plain, device, progress=False)
    val_features, val_labels = extract_features(feature_model, val, device, progress=False)
    steps = epochs * math.ceil(len(train_labels) / batch_size)
    smallest_class = int(torch.bincount(train_labels).min())
    rows = []
    always_wrong = None
    for size in per_class:
        if size is not None and size > smallest_class:
            continue
        accuracies = []
        for seed in seeds:
            chosen = _per_class_subset(train_labels, size, seed)
            subset_epochs = math.ceil(steps / math.ceil(len(chosen) / batch_size))
            head, history = train_linear_head(
                train_features[chosen],
                train_labels[chosen],
                val_features,
                val_labels,
                epochs=subset_epochs,
                lr=lr,
                batch_size=batch_size,
                seed=seed,
                device=device,
            )
            accuracies.append(history.val_acc[-1])
            if size is None:
                with torch.no_grad():
                    predictions = head(val_features).argmax(dim=1)
                wrong = set((predictions != val_labels).nonzero().flatten().tolist())
                always_wrong = wrong if always_wrong is None else always_wrong & wrong
        rows.append(
            {
                "per_class": size if size is not None else "all",
                "train_images": len(chosen),
                "epochs": subset_epochs,
                "val_acc_mean": statistics.fmean(accuracies),
                "val_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "val_acc_runs": accuracies,
            }
        )
    samples = getattr(val, "samples", None)
    names = [str(Path(path).relative_to(val.root)) for path, _ in samples] if samples else None
    return {
        "head_ceiling": head_ceiling(train_features, train_labels, val_features, val_labels, device=device),
        "always_wrong": sorted(names[i] if names else str(i) for i in always_wrong or ()),
        "settings": {
            "seeds": list(seeds),
            "optimizer_steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "val_images": len(val_labels),
        },
        "rows": rows,
    }
