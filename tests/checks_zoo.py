"""Learner-style solutions for tests/test_checks.py: correct alternatives, common mistakes, rigged returns.

``CORRECT[exercise]`` lists solutions every check must accept; ``WRONG[exercise]`` lists
``(solution, keyword)`` pairs where the check must fail with ``keyword`` in its message;
``RIGGED[exercise]`` returns look-alike objects whose ``__eq__`` always says yes.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2

from tlhelpers.models import find_head
from tlhelpers.models import freeze as reference_freeze
from tlhelpers.models import replace_head as reference_replace_head

CORRECT: dict[str, list] = defaultdict(list)
WRONG: dict[str, list] = defaultdict(list)
RIGGED: dict[str, object] = {}


def correct(exercise):
    def register(fn):
        CORRECT[exercise].append(fn)
        return fn

    return register


def wrong(exercise, keyword):
    def register(fn):
        WRONG[exercise].append((fn, keyword))
        return fn

    return register


class Anything:
    """Equal to everything."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


class LyingFloat(float):
    def __eq__(self, other):
        return True

    def __sub__(self, other):
        return 0.0

    __hash__ = float.__hash__


class LyingStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class LyingTensor(torch.Tensor):
    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class LyingList(list):
    def __eq__(self, other):
        return True

    __hash__ = None


class LyingDict(dict):
    def __eq__(self, other):
        return True

    __hash__ = None


class LyingAdam(torch.optim.Adam):
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


# --------------------------------------------------------------------------- preprocess


@correct("preprocess")
def preprocess_with_weights_transforms(image, weights):
    return weights.transforms()(image)[None]


@correct("preprocess")
def preprocess_composed_by_hand(image, weights):
    preset = weights.transforms()
    pipeline = T.Compose(
        [
            T.Resize(preset.resize_size, interpolation=preset.interpolation),
            T.CenterCrop(preset.crop_size),
            T.ToTensor(),
            T.Normalize(preset.mean, preset.std),
        ]
    )
    return pipeline(image).unsqueeze(0)


@correct("preprocess")
def preprocess_v2_on_tensors(image, weights):
    preset = weights.transforms()
    pipeline = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(preset.resize_size, interpolation=preset.interpolation, antialias=True),
            v2.CenterCrop(preset.crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(preset.mean, preset.std),
        ]
    )
    return pipeline(image).unsqueeze(0)


def _by_hand(image, weights, *, mean=None, std=None, resize=None, crop=None, to_tensor=True):
    preset = weights.transforms()
    steps = [
        T.Resize(resize or preset.resize_size, interpolation=preset.interpolation),
        T.CenterCrop(crop or preset.crop_size),
        T.ToTensor() if to_tensor else T.PILToTensor(),
    ]
    if not to_tensor:
        steps.append(T.Lambda(lambda x: x.float()))
    if mean is not False:
        steps.append(T.Normalize(mean or preset.mean, std or preset.std))
    return T.Compose(steps)(image).unsqueeze(0)


@wrong("preprocess", "batch dimension")
def preprocess_without_batch(image, weights):
    return weights.transforms()(image)


@wrong("preprocess", "not normalized")
def preprocess_without_normalization(image, weights):
    return _by_hand(image, weights, mean=False)


@wrong("preprocess", "swapped")
def preprocess_mean_std_swapped(image, weights):
    preset = weights.transforms()
    return _by_hand(image, weights, mean=preset.std, std=preset.mean)


@wrong("preprocess", "0.5")
def preprocess_half_normalization(image, weights):
    return _by_hand(image, weights, mean=[0.5] * 3, std=[0.5] * 3)


@wrong("preprocess", "0-255")
def preprocess_unscaled_pixels(image, weights):
    return _by_hand(image, weights, to_tensor=False)


@wrong("preprocess", "squashes")
def preprocess_squashing(image, weights):
    crop = weights.transforms().crop_size[0]
    return _by_hand(image, weights, resize=(crop, crop))


@wrong("preprocess", "hard-coding")
def preprocess_hard_coded_224(image, weights):
    return _by_hand(image, weights, resize=256, crop=224)


@wrong("preprocess", "resized to")
def preprocess_resizing_to_crop(image, weights):
    return _by_hand(image, weights, resize=weights.transforms().crop_size)


@wrong("preprocess", "channels last")
def preprocess_channels_last(image, weights):
    return weights.transforms()(image).permute(1, 2, 0).unsqueeze(0)


@wrong("preprocess", "float32")
def preprocess_float64(image, weights):
    return weights.transforms()(image).unsqueeze(0).double()


@wrong("preprocess", "torch.Tensor")
def preprocess_numpy(image, weights):
    return weights.transforms()(image).unsqueeze(0).numpy()


def preprocess_rigged(image, weights):
    return weights.transforms()(image).unsqueeze(0).zero_().as_subclass(LyingTensor)


RIGGED["preprocess"] = preprocess_rigged


# --------------------------------------------------------------------------- top_k


@correct("top_k")
def top_k_sorted(logits, categories, k=5):
    probabilities = F.softmax(logits.flatten(), dim=-1).tolist()
    ranked = sorted(zip(categories, probabilities, strict=True), key=lambda pair: pair[1], reverse=True)
    return ranked[:k]


@correct("top_k")
def top_k_tensor_probabilities(logits, categories, k=5):
    probabilities = logits.squeeze(0).softmax(dim=0)
    values, indices = torch.topk(probabilities, k)
    return [(categories[int(i)], v) for v, i in zip(values, indices, strict=True)]


@correct("top_k")
def top_k_numpy(logits, categories, k=5):
    scores = logits.detach().numpy().reshape(-1).astype(np.float64)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    return [[categories[i], probabilities[i]] for i in np.argsort(-probabilities)[:k]]


@wrong("top_k", "logits")
def top_k_raw_logits(logits, categories, k=5):
    values, indices = logits.reshape(-1).topk(k)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@wrong("top_k", "least likely")
def top_k_lowest(logits, categories, k=5):
    values, indices = logits.reshape(-1).softmax(0).topk(k, largest=False)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@wrong("top_k", "lowest first")
def top_k_ascending(logits, categories, k=5):
    probabilities = logits.reshape(-1).softmax(0).tolist()
    return sorted(zip(categories, probabilities, strict=True), key=lambda pair: pair[1])[-k:]


@wrong("top_k", "expected")
def top_k_ignores_k(logits, categories, k=5):
    values, indices = logits.reshape(-1).softmax(0).topk(5)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@wrong("top_k", "index")
def top_k_indices(logits, categories, k=5):
    values, indices = logits.reshape(-1).softmax(0).topk(k)
    return list(zip(indices.tolist(), values.tolist(), strict=True))


@wrong("top_k", "flatten")
def top_k_one_dimensional_only(logits, categories, k=5):
    values, indices = logits.softmax(0).topk(k)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@wrong("top_k", "batch dimension")
def top_k_softmax_over_batch(logits, categories, k=5):
    probabilities = logits.softmax(0).reshape(-1)
    order = torch.argsort(logits.reshape(-1), descending=True)[:k]
    return [(categories[i], probabilities[i].item()) for i in order.tolist()]


@wrong("top_k", "percentages")
def top_k_percentages(logits, categories, k=5):
    values, indices = (100 * logits.reshape(-1).softmax(0)).topk(k)
    return [(categories[i], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@wrong("top_k", "default")
def top_k_without_default(logits, categories, k):
    return top_k_sorted(logits, categories, k)


@wrong("top_k", "k=5")
def top_k_default_three(logits, categories, k=3):
    return top_k_sorted(logits, categories, k)


@wrong("top_k", "list")
def top_k_dictionary(logits, categories, k=5):
    return dict(top_k_sorted(logits, categories, k))


def top_k_rigged(logits, categories, k=5):
    return [(LyingStr("nothing"), LyingFloat(0.0))] * k


RIGGED["top_k"] = top_k_rigged


# --------------------------------------------------------------------------- freeze


@correct("freeze")
def freeze_with_requires_grad_(model):
    return model.requires_grad_(False)


@correct("freeze")
def freeze_named_loop(model):
    for _, parameter in model.named_parameters():
        parameter.requires_grad_(False)
    return model


@wrong("freeze", "return model")
def freeze_returning_none(model):
    for parameter in model.parameters():
        parameter.requires_grad = False


@wrong("freeze", "trainable")
def freeze_all_but_last_child(model):
    for child in list(model.children())[:-1]:
        for parameter in child.parameters():
            parameter.requires_grad = False
    return model


@wrong("freeze", "registered on the model itself")
def freeze_children_only(model):
    for child in model.children():
        child.requires_grad_(False)
    return model


@wrong("freeze", "same object")
def freeze_a_copy(model):
    return copy.deepcopy(model).requires_grad_(False)


def freeze_rigged(model):
    return Anything()


RIGGED["freeze"] = freeze_rigged


# --------------------------------------------------------------------------- count_parameters


@correct("count_parameters")
def count_with_generators(model):
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


@correct("count_parameters")
def count_with_numpy(model):
    sizes = [(np.prod(p.shape), p.requires_grad) for p in model.parameters()]
    return sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)


@correct("count_parameters")
def count_with_loop(model):
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return [trainable, total]


@wrong("count_parameters", "tensors")
def count_tensors(model):
    parameters = list(model.parameters())
    return sum(1 for p in parameters if p.requires_grad), len(parameters)


@wrong("count_parameters", "(trainable, total)")
def count_swapped(model):
    trainable, total = count_with_generators(model)
    return total, trainable


@wrong("count_parameters", "twice")
def count_shared_twice(model):
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    return sum(p.numel() for p in every if p.requires_grad), sum(p.numel() for p in every)


@wrong("count_parameters", "buffers")
def count_state_dict(model):
    trainable, _ = count_with_generators(model)
    return trainable, sum(t.numel() for t in model.state_dict().values())


@wrong("count_parameters", "requires_grad")
def count_everything_trainable(model):
    total = sum(p.numel() for p in model.parameters())
    return total, total


@wrong("count_parameters", "frozen")
def count_frozen_as_trainable(model):
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if not p.requires_grad), total


@wrong("count_parameters", "tensor")
def count_as_tensors(model):
    trainable, total = count_with_generators(model)
    return torch.tensor(trainable), torch.tensor(total)


def count_rigged(model):
    return Anything(), Anything()


RIGGED["count_parameters"] = count_rigged


# --------------------------------------------------------------------------- freeze_batchnorm


@correct("freeze_batchnorm")
def freeze_batchnorm_listing_types(model):
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            module.eval()
            module.weight.requires_grad = False
            module.bias.requires_grad = False
    return model


@correct("freeze_batchnorm")
def freeze_batchnorm_with_apply(model):
    def quieten(module):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train(False)
            module.requires_grad_(False)

    return model.apply(quieten)


@wrong("freeze_batchnorm", "training mode")
def freeze_batchnorm_without_eval(model):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.requires_grad_(False)
    return model


@wrong("freeze_batchnorm", "BatchNorm1d")
def freeze_batchnorm_2d_only(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            module.requires_grad_(False)
    return model


@wrong("freeze_batchnorm", "subclass")
def freeze_batchnorm_exact_types(model):
    for module in model.modules():
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
            module.eval()
            module.requires_grad_(False)
    return model


@wrong("freeze_batchnorm", "affine")
def freeze_batchnorm_eval_only(model):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


@wrong("freeze_batchnorm", "Dropout")
def freeze_batchnorm_whole_model_eval(model):
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.requires_grad_(False)
    return model


@wrong("freeze_batchnorm", "outside BatchNorm")
def freeze_batchnorm_freezing_everything(model):
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


@wrong("freeze_batchnorm", "return model")
def freeze_batchnorm_returning_none(model):
    freeze_batchnorm_with_apply(model)


def freeze_batchnorm_rigged(model):
    return Anything()


RIGGED["freeze_batchnorm"] = freeze_batchnorm_rigged


# --------------------------------------------------------------------------- replace_head


def _set_by_name(model, dotted_name, module):
    parent_name, _, attribute = dotted_name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, module)


@correct("replace_head")
def replace_head_with_find_head(model, num_classes):
    name, old = find_head(model)
    _set_by_name(model, name, nn.Linear(old.in_features, num_classes))
    return model


@correct("replace_head")
def replace_head_by_family(model, num_classes):
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
    elif isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif isinstance(model.classifier, nn.Sequential):
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    else:
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model


@wrong("replace_head", "in place")
def replace_head_editing_out_features(model, num_classes):
    find_head(model)[1].out_features = num_classes
    return model


@wrong("replace_head", "frozen")
def replace_head_frozen(model, num_classes):
    replace_head_with_find_head(model, num_classes)
    find_head(model)[1].requires_grad_(False)
    return model


@wrong("replace_head", "in_features")
def replace_head_fixed_in_features(model, num_classes):
    name, _ = find_head(model)
    _set_by_name(model, name, nn.Linear(512, num_classes))
    return model


@wrong("replace_head", "whole")
def replace_head_whole_classifier(model, num_classes):
    if isinstance(getattr(model, "classifier", None), nn.Sequential):
        model.classifier = nn.Linear(model.classifier[-1].in_features, num_classes)
        return model
    return replace_head_with_find_head(model, num_classes)


@wrong("replace_head", "reset_classifier")
def replace_head_torchvision_only(model, num_classes):
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


@wrong("replace_head", "literally named")
def replace_head_setattr_dotted_name(model, num_classes):
    name, old = find_head(model)
    setattr(model, name, nn.Linear(old.in_features, num_classes))
    return model


@wrong("replace_head", "same object")
def replace_head_appending(model, num_classes):
    return nn.Sequential(model, nn.Linear(1000, num_classes))


def replace_head_rigged(model, num_classes):
    return Anything()


RIGGED["replace_head"] = replace_head_rigged


# --------------------------------------------------------------------------- build_feature_extractor


@correct("build_feature_extractor")
def build_feature_extractor_own_code(model, num_classes):
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@correct("build_feature_extractor")
def build_feature_extractor_from_tlhelpers_parts(model, num_classes):
    # Using earlier exercises' references is allowed; only this exercise's reference is not.
    return reference_replace_head(reference_freeze(model), num_classes)


@wrong("build_feature_extractor", "Freeze first")
def build_feature_extractor_swap_then_freeze(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model.requires_grad_(False)


@wrong("build_feature_extractor", "still trainable")
def build_feature_extractor_without_freezing(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@wrong("build_feature_extractor", "old head")
def build_feature_extractor_without_swap(model, num_classes):
    return model.requires_grad_(False)


@wrong("build_feature_extractor", "return model")
def build_feature_extractor_returning_none(model, num_classes):
    build_feature_extractor_own_code(model, num_classes)


def build_feature_extractor_rigged(model, num_classes):
    return Anything()


RIGGED["build_feature_extractor"] = build_feature_extractor_rigged


# --------------------------------------------------------------------------- trainable_parameters


@correct("trainable_parameters")
def trainable_with_comprehension(model):
    return [p for p in model.parameters() if p.requires_grad]


@correct("trainable_parameters")
def trainable_with_filter(model):
    return list(filter(lambda p: p.requires_grad, model.parameters()))


@correct("trainable_parameters")
def trainable_with_named_loop(model):
    found = []
    for _, parameter in model.named_parameters():
        if parameter.requires_grad:
            found.append(parameter)
    return found


@wrong("trainable_parameters", "list")
def trainable_generator(model):
    return (p for p in model.parameters() if p.requires_grad)


@wrong("trainable_parameters", "list")
def trainable_filter_object(model):
    return filter(lambda p: p.requires_grad, model.parameters())


@wrong("trainable_parameters", "list")
def trainable_tuple(model):
    return tuple(p for p in model.parameters() if p.requires_grad)


@wrong("trainable_parameters", "frozen")
def trainable_everything(model):
    return list(model.parameters())


@wrong("trainable_parameters", "more than once")
def trainable_per_module(model):
    return [p for m in model.modules() for p in m.parameters(recurse=False) if p.requires_grad]


@wrong("trainable_parameters", "names")
def trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


@wrong("trainable_parameters", "pairs")
def trainable_named_pairs(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@wrong("trainable_parameters", "order")
def trainable_sorted_by_name(model):
    return [p for _, p in sorted(model.named_parameters()) if p.requires_grad]


@wrong("trainable_parameters", "misses")
def trainable_head_only(model):
    return [p for p in model.fc.parameters() if p.requires_grad]


def trainable_rigged(model):
    return LyingList()


RIGGED["trainable_parameters"] = trainable_rigged


# --------------------------------------------------------------------------- make_optimizer


@correct("make_optimizer")
def optimizer_with_filter(model, lr=1e-3):
    return torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)


@correct("make_optimizer")
def optimizer_with_float_lr(model, lr=0.001):
    return torch.optim.Adam(params=[p for p in model.parameters() if p.requires_grad], lr=float(lr))


@wrong("make_optimizer", "frozen")
def optimizer_over_everything(model, lr=1e-3):
    return torch.optim.Adam(model.parameters(), lr=lr)


@wrong("make_optimizer", "Adam")
def optimizer_sgd(model, lr=1e-3):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)


@wrong("make_optimizer", "AdamW")
def optimizer_adamw(model, lr=1e-3):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


@wrong("make_optimizer", "ignored")
def optimizer_ignoring_lr(model, lr=1e-3):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad])


@wrong("make_optimizer", "default")
def optimizer_without_default(model, lr):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


@wrong("make_optimizer", "expected 0.001")
def optimizer_wrong_default(model, lr=1e-2):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def optimizer_rigged(model, lr=1e-3):
    return LyingAdam([p for p in model.parameters() if p.requires_grad], lr=0.5)


RIGGED["make_optimizer"] = optimizer_rigged


# --------------------------------------------------------------------------- train_one_epoch


def _epoch(
    model, loader, optimizer, loss_fn, device, *, zero_grad=True, train=True, step=True, result="mean"
):
    if train:
        model.train()
    losses = []
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        if step:
            optimizer.step()
        losses.append((loss, len(targets)))
    samples = sum(n for _, n in losses)
    if result == "tensor":
        return sum(loss * n for loss, n in losses) / samples
    if result == "batch mean":
        return sum(loss.item() for loss, _ in losses) / len(losses)
    if result == "last":
        return losses[-1][0].item()
    if result == "sum":
        return sum(loss.item() * n for loss, n in losses)
    return sum(loss.item() * n for loss, n in losses) / samples


@correct("train_one_epoch")
def epoch_like_reference(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device)


@correct("train_one_epoch")
def epoch_with_summed_losses(model, loader, optimizer, loss_fn, device):
    model.to(device).train()
    total = 0.0
    for inputs, targets in loader:
        outputs = model(inputs.to(device))
        loss = loss_fn(outputs, targets.to(device))
        model.zero_grad()
        loss.backward()
        optimizer.step()
        total += F.cross_entropy(outputs, targets, reduction="sum").item()
    return total / len(loader.dataset)


@correct("train_one_epoch")
def epoch_zeroing_after_step(model, loader, optimizer, loss_fn, device):
    model.train()
    running = []
    for inputs, targets in loader:
        loss = loss_fn(model(inputs.to(device)), targets.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        running.append(loss.item() * inputs.shape[0])
    return float(np.sum(running) / len(loader.dataset))


@wrong("train_one_epoch", "zero_grad")
def epoch_without_zero_grad(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, zero_grad=False)


@wrong("train_one_epoch", "model.train()")
def epoch_without_train_mode(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, train=False)


@wrong("train_one_epoch", "optimizer.step()")
def epoch_without_step(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, step=False)


@wrong("train_one_epoch", "optimizer.step()")
def epoch_zeroing_before_step(model, loader, optimizer, loss_fn, device):
    model.train()
    for inputs, targets in loader:
        loss_fn(model(inputs), targets).backward()
        optimizer.zero_grad()
        optimizer.step()
    return 1.0


@wrong("train_one_epoch", "by its size")
def epoch_mean_of_batch_means(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, result="batch mean")


@wrong("train_one_epoch", "tensor")
def epoch_returning_tensor(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, result="tensor")


@wrong("train_one_epoch", "last batch")
def epoch_returning_last_loss(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, result="last")


@wrong("train_one_epoch", "summed")
def epoch_returning_sum(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, result="sum")


@wrong("train_one_epoch", "number of batches")
def epoch_dividing_by_batches(model, loader, optimizer, loss_fn, device):
    return _epoch(model, loader, optimizer, loss_fn, device, result="sum") / len(loader)


@wrong("train_one_epoch", "once per batch")
def epoch_with_second_forward(model, loader, optimizer, loss_fn, device):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            total += loss_fn(model(inputs), targets).item() * len(targets)
    return total / len(loader.dataset)


def epoch_rigged(model, loader, optimizer, loss_fn, device):
    _epoch(model, loader, optimizer, loss_fn, device)
    return LyingFloat(0.0)


RIGGED["train_one_epoch"] = epoch_rigged


# --------------------------------------------------------------------------- evaluate


def _accuracy(model, loader, *, eval_mode=True, no_grad=True, result="fraction"):
    if eval_mode:
        model.eval()
    correct, seen, per_batch = 0, 0, []
    with torch.set_grad_enabled(not no_grad):
        for inputs, targets in loader:
            hits = (model(inputs).argmax(dim=1) == targets).sum()
            correct += hits
            seen += len(targets)
            per_batch.append(hits.item() / len(targets))
    return {
        "fraction": correct.item() / seen,
        "tensor": correct / seen,
        "percent": 100 * correct.item() / seen,
        "count": correct.item(),
        "batch mean": sum(per_batch) / len(per_batch),
        "errors": 1 - correct.item() / seen,
    }[result]


@correct("evaluate")
def evaluate_like_reference(model, loader, device):
    return _accuracy(model, loader)


@correct("evaluate")
def evaluate_with_max_and_inference_mode(model, loader, device):
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for inputs, targets in loader:
            _, predicted = model(inputs.to(device)).max(1)
            correct += int((predicted == targets.to(device)).sum())
    model.train(was_training)
    return correct / len(loader.dataset)


@correct("evaluate")
@torch.no_grad()
def evaluate_decorated_no_grad(model, loader, device):
    model.eval()
    hits = [(model(x.to(device)).argmax(1) == y.to(device)).float() for x, y in loader]
    return torch.cat(hits).mean().item()


@wrong("evaluate", "model.eval()")
def evaluate_without_eval_mode(model, loader, device):
    return _accuracy(model, loader, eval_mode=False)


@wrong("evaluate", "no_grad")
def evaluate_with_gradients(model, loader, device):
    return _accuracy(model, loader, no_grad=False)


@wrong("evaluate", "percentage")
def evaluate_percent(model, loader, device):
    return _accuracy(model, loader, result="percent")


@wrong("evaluate", "number of correct")
def evaluate_count(model, loader, device):
    return _accuracy(model, loader, result="count")


@wrong("evaluate", "per-batch")
def evaluate_mean_of_batches(model, loader, device):
    return _accuracy(model, loader, result="batch mean")


@wrong("evaluate", "wrong predictions")
def evaluate_errors(model, loader, device):
    return _accuracy(model, loader, result="errors")


@wrong("evaluate", "tensor")
def evaluate_tensor(model, loader, device):
    return _accuracy(model, loader, result="tensor")


@wrong("evaluate", "whole notebook")
def evaluate_switching_grad_off_globally(model, loader, device):
    torch.set_grad_enabled(False)
    return _accuracy(model, loader)


@wrong("evaluate", "backward")
def evaluate_calling_backward(model, loader, device):
    model.eval()
    correct = 0
    for inputs, targets in loader:
        outputs = model.forward(inputs)  # bypasses forward hooks, so only param.grad gives it away
        F.cross_entropy(outputs, targets).backward()
        correct += (outputs.argmax(1) == targets).sum().item()
    return correct / len(loader.dataset)


def evaluate_rigged(model, loader, device):
    return LyingFloat(0.0)


RIGGED["evaluate"] = evaluate_rigged


# --------------------------------------------------------------------------- unfreeze


@correct("unfreeze")
def unfreeze_with_get_submodule(model, module_names):
    for name in module_names:
        model.get_submodule(name).requires_grad_(True)
    return model


@correct("unfreeze")
def unfreeze_by_parameter_names(model, module_names):
    for name, parameter in model.named_parameters():
        if any(name.startswith(module + ".") for module in module_names):
            parameter.requires_grad = True
    return model


@wrong("unfreeze", "outside")
def unfreeze_everything(model, module_names):
    return model.requires_grad_(True)


@wrong("unfreeze", "get_submodule")
def unfreeze_with_getattr(model, module_names):
    for name in module_names:
        getattr(model, name).requires_grad_(True)
    return model


@wrong("unfreeze", "nested")
def unfreeze_direct_parameters_only(model, module_names):
    for name in module_names:
        for parameter in model.get_submodule(name).parameters(recurse=False):
            parameter.requires_grad = True
    return model


@wrong("unfreeze", "as it was")
def unfreeze_after_freezing_all(model, module_names):
    model.requires_grad_(False)
    return unfreeze_with_get_submodule(model, module_names)


@wrong("unfreeze", "fc_norm")
def unfreeze_by_prefix(model, module_names):
    for name, parameter in model.named_parameters():
        if any(name.startswith(module) for module in module_names):
            parameter.requires_grad = True
    return model


@wrong("unfreeze", "return model")
def unfreeze_returning_none(model, module_names):
    unfreeze_with_get_submodule(model, module_names)


def unfreeze_rigged(model, module_names):
    return Anything()


RIGGED["unfreeze"] = unfreeze_rigged


# --------------------------------------------------------------------------- param_groups


def _split(model):
    head = {id(p) for p in find_head(model)[1].parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [p for p in trainable if id(p) not in head], [p for p in trainable if id(p) in head]


@correct("param_groups")
def groups_head_first(model, head_lr, backbone_lr):
    backbone, head = _split(model)
    return [{"params": head, "lr": head_lr}, {"params": backbone, "lr": backbone_lr}]


@correct("param_groups")
def groups_with_generators(model, head_lr, backbone_lr):
    head = (p for p in model.fc.parameters() if p.requires_grad)
    backbone = (p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc."))
    return [dict(params=backbone, lr=backbone_lr), dict(params=head, lr=head_lr)]


@correct("param_groups")
def groups_three_ways(model, head_lr, backbone_lr):
    backbone, head = _split(model)
    middle = len(backbone) // 2
    return [
        {"params": backbone[:middle], "lr": backbone_lr},
        {"params": head, "lr": head_lr, "weight_decay": 0.0},
        {"params": backbone[middle:], "lr": backbone_lr},
    ]


@correct("param_groups")
def groups_as_generator(model, head_lr, backbone_lr):
    backbone, head = _split(model)
    yield {"params": iter(backbone), "lr": backbone_lr}
    yield {"params": iter(head), "lr": head_lr}


@wrong("param_groups", "two groups")
def groups_head_twice(model, head_lr, backbone_lr):
    _, head = _split(model)
    everything = [p for p in model.parameters() if p.requires_grad]
    return [{"params": everything, "lr": backbone_lr}, {"params": head, "lr": head_lr}]


@wrong("param_groups", "frozen")
def groups_with_frozen(model, head_lr, backbone_lr):
    _, head = _split(model)
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if id(p) not in head_ids]
    return [{"params": rest, "lr": backbone_lr}, {"params": head, "lr": head_lr}]


@wrong("param_groups", "swapped")
def groups_swapped(model, head_lr, backbone_lr):
    return groups_head_first(model, backbone_lr, head_lr)


@wrong("param_groups", "misses the head")
def groups_without_head(model, head_lr, backbone_lr):
    backbone, _ = _split(model)
    return [{"params": backbone, "lr": backbone_lr}]


@wrong("param_groups", "misses trainable backbone")
def groups_last_stage_only(model, head_lr, backbone_lr):
    _, head = _split(model)
    return [{"params": list(model.layer2.parameters()), "lr": backbone_lr}, {"params": head, "lr": head_lr}]


@wrong("param_groups", "list of dicts, one per group, got dict")
def groups_single_dict(model, head_lr, backbone_lr):
    backbone, head = _split(model)
    return {"head": head, "backbone": backbone}


@wrong("param_groups", "'lr'")
def groups_without_lr(model, head_lr, backbone_lr):
    backbone, head = _split(model)
    return [{"params": backbone}, {"params": head, "lr": head_lr}]


def groups_rigged(model, head_lr, backbone_lr):
    return [LyingDict(params=[], lr=head_lr)]


RIGGED["param_groups"] = groups_rigged


# --------------------------------------------------------------------------- split_indices


def _by_class(targets):
    by_class = defaultdict(list)
    for index, target in enumerate(targets):
        by_class[int(target)].append(index)
    return by_class


def _held_out(val_fraction, n):
    return min(max(1, round(val_fraction * n)), n - 1)


@correct("split_indices")
def split_with_numpy_generator(targets, val_fraction, seed):
    rng = np.random.default_rng(seed)
    train, val = [], []
    for indices in _by_class(targets).values():
        shuffled = rng.permutation(indices).tolist()
        held_out = _held_out(val_fraction, len(indices))
        val += shuffled[:held_out]
        train += shuffled[held_out:]
    return sorted(train), sorted(val)


@correct("split_indices")
def split_with_torch_generator(targets, val_fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(targets)
    val = []
    for label in labels.unique():
        indices = (labels == label).nonzero().flatten()
        order = torch.randperm(len(indices), generator=generator)
        val += indices[order[: _held_out(val_fraction, len(indices))]].tolist()
    val_set = set(val)
    return [i for i in range(len(targets)) if i not in val_set], sorted(val)


@correct("split_indices")
def split_with_random_sample(targets, val_fraction, seed):
    rng = random.Random(seed)
    val = set()
    for indices in _by_class(targets).values():
        val.update(rng.sample(indices, _held_out(val_fraction, len(indices))))
    return sorted(set(range(len(targets))) - val), sorted(val)


@wrong("split_indices", "not stratified")
def split_whole_folder(targets, val_fraction, seed):
    shuffled = list(range(len(targets)))
    random.Random(seed).shuffle(shuffled)
    held_out = round(val_fraction * len(targets))
    return sorted(shuffled[held_out:]), sorted(shuffled[:held_out])


@wrong("split_indices", "per class")
def split_floor_without_minimum(targets, val_fraction, seed):
    rng = random.Random(seed)
    train, val = [], []
    for indices in _by_class(targets).values():
        shuffled = rng.sample(indices, len(indices))
        held_out = int(val_fraction * len(indices))
        val += shuffled[:held_out]
        train += shuffled[held_out:]
    return sorted(train), sorted(val)


@wrong("split_indices", "swapped")
def split_swapped(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return val, train


@wrong("split_indices", "both lists")
def split_overlapping(targets, val_fraction, seed):
    _, val = split_with_random_sample(targets, val_fraction, seed)
    return list(range(len(targets))), val


@wrong("split_indices", "neither list")
def split_losing_indices(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return train[1:], val


@wrong("split_indices", "sort both lists")
def split_unsorted(targets, val_fraction, seed):
    rng = random.Random(seed)
    train, val = [], []
    for indices in _by_class(targets).values():
        shuffled = rng.sample(indices, len(indices))
        held_out = _held_out(val_fraction, len(indices))
        val += shuffled[:held_out]
        train += shuffled[held_out:]
    return train, val


@wrong("split_indices", "not deterministic")
def split_unseeded(targets, val_fraction, seed):
    return split_with_random_sample(targets, val_fraction, seed=random.Random().random())


@wrong("split_indices", "ignores the seed")
def split_fixed_seed(targets, val_fraction, seed):
    return split_with_random_sample(targets, val_fraction, seed=42)


@wrong("split_indices", "global random state")
def split_global_random(targets, val_fraction, seed):
    random.seed(seed)
    val = []
    for indices in _by_class(targets).values():
        val += random.sample(indices, _held_out(val_fraction, len(indices)))
    return sorted(set(range(len(targets))) - set(val)), sorted(val)


@wrong("split_indices", "global random state")
def split_torch_manual_seed(targets, val_fraction, seed):
    torch.manual_seed(seed)
    val = []
    for indices in _by_class(targets).values():
        order = torch.randperm(len(indices)).tolist()
        val += [indices[i] for i in order[: _held_out(val_fraction, len(indices))]]
    return sorted(set(range(len(targets))) - set(val)), sorted(val)


@wrong("split_indices", "tensor")
def split_as_tensors(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return torch.tensor(train), torch.tensor(val)


@wrong("split_indices", "tensors")
def split_lists_of_tensors(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return list(torch.tensor(train)), list(torch.tensor(val))


@wrong("split_indices", "NumPy numbers")
def split_numpy_ints(targets, val_fraction, seed):
    rng = np.random.default_rng(seed)
    train, val = [], []
    for indices in _by_class(targets).values():
        shuffled = list(rng.permutation(indices))
        held_out = _held_out(val_fraction, len(indices))
        val += shuffled[:held_out]
        train += shuffled[held_out:]
    return sorted(train), sorted(val)


@wrong("split_indices", "NumPy array")
def split_numpy_arrays(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return np.array(train), np.array(val)


@wrong("split_indices", "pair (train_indices, val_indices)")
def split_with_a_dict(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return {"train": train, "val": val}


@wrong("split_indices", "pair (train_indices, val_indices), got tuple of length 3")
def split_with_the_counts(targets, val_fraction, seed):
    train, val = split_with_random_sample(targets, val_fraction, seed)
    return train, val, len(val)


@wrong("split_indices", "return train_indices, val_indices")
def split_as_a_list(targets, val_fraction, seed):
    return list(split_with_random_sample(targets, val_fraction, seed))


def split_rigged(targets, val_fraction, seed):
    return LyingList(), LyingList()


RIGGED["split_indices"] = split_rigged
