"""Training: optimizers, the training loop, evaluation, feature caching, checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from .models import trainable_parameters
from .utils import reference_implementation


@reference_implementation
def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam over exactly the trainable parameters.

    Reference solution in 04_training_the_head.
    """
    return torch.optim.Adam(trainable_parameters(model), lr=lr)


@reference_implementation
def train_one_epoch(model: nn.Module, loader, optimizer, loss_fn, device) -> float:
    """One pass over ``loader`` in train mode; returns the mean loss per sample.

    Reference solution in 04_training_the_head.
    """
    model.train()
    total_loss, seen = 0.0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * targets.size(0)
        seen += targets.size(0)
    return total_loss / seen


@reference_implementation
def evaluate(model: nn.Module, loader, device) -> float:
    """Accuracy in [0, 1] in eval mode without gradients.

    Reference solution in 04_training_the_head.
    """
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            correct += (model(inputs).argmax(dim=1) == targets).sum().item()
            seen += targets.size(0)
    return correct / seen
