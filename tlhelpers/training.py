"""Training: optimizers, the training loop, evaluation, feature caching, checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.std import tqdm as text_tqdm

from .models import find_head, freeze_batchnorm, trainable_parameters
from .utils import is_autograding, pick_device, reference_implementation

_CHECKPOINT_FORMAT = "tlhelpers-checkpoint-v1"

# torch.OutOfMemoryError since torch 2.5; torch.cuda.OutOfMemoryError (the same class there) before.
_TorchOutOfMemoryError = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


class GPUOutOfMemoryError(_TorchOutOfMemoryError):
    """The GPU ran out of memory inside a tlhelpers call; the message names the call, the batch size in
    use and what to try. Still a ``torch.OutOfMemoryError`` (and a ``RuntimeError``), chained to the
    original. Raised by ``fit``, ``train_one_epoch``, ``extract_features`` and ``predict``
    (04_training_the_head).
    """


def _batch_size_of(loader) -> int | None:
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return size


@contextlib.contextmanager
def _explain_out_of_memory(call: str, batch_size: int | None, smaller: str):
    """Turn a CUDA out-of-memory error inside ``call`` into a ``GPUOutOfMemoryError`` that says what to do.

    ``smaller`` is a format string with ``{batch_size}``: how to ask ``call`` for a smaller batch.
    """
    try:
        yield
    except GPUOutOfMemoryError:
        raise
    except _TorchOutOfMemoryError as error:
        free_memory = (
            "Free memory first: `del` the models, optimizers and tensors of earlier experiments that you no "
            "longer need, then run `import gc; gc.collect(); torch.cuda.empty_cache()` (restart the kernel "
            "if that is not enough)."
        )
        if batch_size is None:
            in_use = "an unknown batch size"
            advice = f"Try a smaller batch, {smaller.format(batch_size=16)} for instance. {free_memory}"
        elif batch_size > 1:
            in_use = f"batch size {batch_size}"
            advice = f"Try half that: {smaller.format(batch_size=batch_size // 2)}. {free_memory}"
        else:
            in_use = "batch size 1"
            advice = (
                f"A batch of 1 is already the smallest. {free_memory} Or use smaller images, a smaller "
                "backbone, mixed precision (fit(..., amp=True)) or the CPU."
            )
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GPUOutOfMemoryError(
            f"{call} ran out of GPU memory with {in_use}. {advice} (PyTorch said: {first_line})"
        ) from error


def _check_outputs_fit_labels(outputs: torch.Tensor, targets: torch.Tensor, call: str) -> None:
    """A model with fewer outputs than the data has classes fails with a clear message, not an index error."""
    if outputs.ndim != 2 or targets.ndim != 1 or targets.numel() == 0 or targets.is_floating_point():
        return
    largest = int(targets.max())
    if largest >= outputs.shape[1]:
        raise ValueError(
            f"{call}: the model outputs {outputs.shape[1]} class scores, but the data has a label {largest} "
            f"(so at least {largest + 1} classes). Give the model a head with one output per class of "
            "your data: replace_head(model, num_classes=len(classes))."
        )


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
    smaller = "a DataLoader with batch_size={batch_size}"
    with _explain_out_of_memory("train_one_epoch", _batch_size_of(loader), smaller):
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


@dataclass
class History:
    """Per-epoch record of a training run: losses, accuracies and seconds.

    ``fit`` and ``train_linear_head`` return one; ``plots.plot_history`` draws several side by side.
    Defined in 04_training_the_head.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def best_val_acc(self) -> float | None:
        """Highest validation accuracy of any epoch (None before the first validated epoch)."""
        return max(self.val_acc) if self.val_acc else None

    @property
    def total_seconds(self) -> float:
        """Wall-clock seconds of all epochs together."""
        return sum(self.seconds)

    def as_dict(self) -> dict[str, list[float]]:
        """The per-epoch lists as a plain dict (JSON-friendly, checkpoint-friendly)."""
        return {name: list(values) for name, values in asdict(self).items()}


def _show_progress(progress: bool) -> bool:
    # Under nbgrader no bar at all: graded cells stay quiet, and nothing ever goes to stderr.
    return progress and not is_autograding()


def _notebook_widgets_available() -> bool:
    """True inside a Jupyter kernel where tqdm can draw its bar as a widget (ipywidgets installed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or "IPKernelApp" not in shell.config:
        return False
    try:
        from tqdm.notebook import IProgress
    except ImportError:
        return False
    return IProgress is not None


def _progress_bar(iterable=None, *, total=None, desc: str, show: bool):
    """A progress bar that never writes to stderr: a notebook widget in Jupyter (with ipywidgets), text on
    stdout elsewhere, and nothing at all when ``show`` is false."""
    if not show:
        return text_tqdm(iterable, total=total, desc=desc, disable=True)
    if _notebook_widgets_available():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, total=total, desc=desc)
    return text_tqdm(iterable, total=total, desc=desc, file=sys.stdout, dynamic_ncols=True)


def _as_loader(data, batch_size: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    raise TypeError(f"data must be a torch Dataset or DataLoader, got {type(data).__name__}")


def _run_validation(model, loader, loss_fn, device, use_amp) -> tuple[float, float]:
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    smaller = "a val_loader with batch_size={batch_size}"
    with (
        _explain_out_of_memory("fit (validation)", _batch_size_of(loader), smaller),
        torch.no_grad(),
        torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp),
    ):
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            if seen == 0:
                _check_outputs_fit_labels(outputs, targets, "fit (validation)")
            total_loss += loss_fn(outputs, targets).item() * targets.size(0)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
            seen += targets.size(0)
    if seen == 0:
        raise ValueError("val_loader yielded no samples")
    return total_loss / seen, correct / seen


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device,
    loss_fn=None,
    scheduler=None,
    checkpoint_path=None,
    freeze_bn: bool = False,
    progress: bool = True,
    amp: bool | None = None,
) -> History:
    """Train for ``epochs`` epochs, validating after each; return the ``History``.

    - ``val_loader`` may be None (no validation, val lists stay empty).
    - ``scheduler`` steps once per epoch (``ReduceLROnPlateau`` gets the validation loss).
    - ``checkpoint_path``: the weights of the epoch with the best validation accuracy are saved
      there (``load_checkpoint`` restores them); needs a ``val_loader``.
    - ``freeze_bn``: BatchNorm layers stay frozen (``freeze_batchnorm`` after every ``model.train()``).
    - ``amp``: mixed precision; None means "on CUDA", and it is always off on other devices.
    - ``progress``: one progress bar per epoch (a widget in Jupyter, else text on stdout, never stderr);
      never drawn under nbgrader autograding.
    - Running out of GPU memory raises ``GPUOutOfMemoryError``, which says what batch size to try.
    Defined in 04_training_the_head, used again in 05_fine_tuning and 06_capstone.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if checkpoint_path is not None and val_loader is None:
        raise ValueError("checkpoint_path keeps the epoch of best validation accuracy: pass a val_loader")
    device = torch.device(device)
    use_amp = device.type == "cuda" and (amp is None or amp)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    model.to(device)
    history = History()
    best_acc = -1.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        if freeze_bn:
            freeze_batchnorm(model)
        bar = _progress_bar(
            total=len(train_loader), desc=f"epoch {epoch}/{epochs}", show=_show_progress(progress)
        )
        total_loss, correct, seen = 0.0, 0, 0
        smaller = "a train_loader with batch_size={batch_size}"
        with _explain_out_of_memory("fit", _batch_size_of(train_loader), smaller):
            for inputs, targets in train_loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad()
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    outputs = model(inputs)
                    if epoch == 1 and seen == 0:
                        _check_outputs_fit_labels(outputs, targets, "fit")
                    loss = loss_fn(outputs, targets)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total_loss += loss.item() * targets.size(0)
                correct += (outputs.argmax(dim=1) == targets).sum().item()
                seen += targets.size(0)
                bar.update()
        if seen == 0:
            bar.close()
            raise ValueError("train_loader yielded no samples")
        history.train_loss.append(total_loss / seen)
        history.train_acc.append(correct / seen)
        summary = {"loss": f"{total_loss / seen:.3f}", "acc": f"{correct / seen:.3f}"}
        if val_loader is not None:
            val_loss, val_acc = _run_validation(model, val_loader, loss_fn, device, use_amp)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            summary.update(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
            if checkpoint_path is not None and val_acc > best_acc:
                best_acc = val_acc
                save_checkpoint(model, checkpoint_path, epoch=epoch, val_acc=val_acc)
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(history.val_loss[-1] if history.val_loss else history.train_loss[-1])
            else:
                scheduler.step()
        history.seconds.append(time.perf_counter() - started)
        bar.set_postfix(summary)
        bar.close()
    return history


def feature_cache_dir(cache_dir=None) -> Path:
    """The folder of cached features: ``<cache_dir>/features``, by default under ``$TL_CACHE`` or
    ``~/.cache/tlhelpers``. Delete it to force a fresh extraction. Defined in 04_training_the_head.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("TL_CACHE") or Path.home() / ".cache" / "tlhelpers"
    return Path(cache_dir) / "features"


def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())


def _model_fingerprint(model: nn.Module, digest) -> None:
    digest.update(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _hash_tensor(digest, tensor)


def _dataset_fingerprint(dataset, digest) -> None:
    """Hash what decides the features: the files (paths, sizes, labels), the transform, or the tensors."""
    digest.update(f"{type(dataset).__name__}:{len(dataset)}".encode())
    if isinstance(dataset, Subset):
        digest.update(repr(list(dataset.indices)).encode())
        _dataset_fingerprint(dataset.dataset, digest)
        return
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        for path, label in samples:
            size = os.path.getsize(path) if os.path.exists(path) else -1
            digest.update(f"{path}|{size}|{label}\n".encode())
        digest.update(repr(getattr(dataset, "transform", None)).encode())
        return
    if isinstance(dataset, TensorDataset):
        for tensor in dataset.tensors:
            _hash_tensor(digest, tensor)
        return
    # Any other dataset: its transform and its first and last samples stand in for its content.
    digest.update(repr(getattr(dataset, "transform", None)).encode())
    for index in sorted({0, len(dataset) - 1}) if len(dataset) else []:
        for item in dataset[index]:
            if isinstance(item, torch.Tensor):
                _hash_tensor(digest, item)
            else:
                digest.update(repr(item).encode())


def _feature_cache_file(cache_dir, cache_key: str, model: nn.Module, dataset) -> Path:
    digest = hashlib.sha256()
    _model_fingerprint(model, digest)
    _dataset_fingerprint(dataset, digest)
    safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_key)
    return feature_cache_dir(cache_dir) / f"{safe_key}-{digest.hexdigest()[:16]}.pt"


def _load_feature_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        features, labels = cached["features"], cached["labels"]
        if not (isinstance(features, torch.Tensor) and isinstance(labels, torch.Tensor)):
            raise TypeError("features or labels is not a tensor")
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(f"shapes {tuple(features.shape)} and {tuple(labels.shape)} do not fit")
    except Exception as error:
        print(f"Feature cache {path} is unreadable ({error}); deleting it and extracting again.")
        path.unlink(missing_ok=True)
        return None
    return features, labels


def _atomic_save(obj, path: Path) -> None:
    """Write to a temporary file next to ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run tiny CPU work on one thread: it gains nothing from more, and on a busy machine
    (a shared grading server) OpenMP threads waiting on each other made it 30 times slower."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _remove_stale_caches(cache_file: Path) -> None:
    """Delete the files of the same cache key with another fingerprint: they can never be used again."""
    key = cache_file.name[: -len("-0123456789abcdef.pt")]
    pattern = re.compile(rf"{re.escape(key)}-[0-9a-f]{{16}}\.pt")
    for candidate in cache_file.parent.glob("*.pt"):
        if candidate != cache_file and pattern.fullmatch(candidate.name):
            candidate.unlink(missing_ok=True)


def extract_features(
    model: nn.Module,
    data,
    device=None,
    *,
    batch_size: int = 64,
    cache_dir=None,
    cache_key: str | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen feature model once over ``data``: ``(features [N, D] float32, labels [N] int64)``.

    ``model`` maps images to feature vectors (e.g. ``models.headless(backbone.model)``); ``data`` is a
    Dataset or DataLoader. With ``cache_key`` the result is stored under ``cache_dir`` (default:
    ``$TL_CACHE`` or ``~/.cache/tlhelpers``) in ``features/`` and reused next time. The file name also
    carries a fingerprint of the model's weights and the data's files and transform, so changing
    either never reuses stale features. Progress is shown as in ``fit``; running out of GPU memory raises
    ``GPUOutOfMemoryError`` with a smaller ``batch_size`` to try. Defined in 04_training_the_head.
    """
    loader = _as_loader(data, batch_size)
    cache_file = None
    if cache_key is not None:
        cache_file = _feature_cache_file(cache_dir, cache_key, model, loader.dataset)
        cached = _load_feature_cache(cache_file)
        if cached is not None:
            return cached
    device = torch.device(device) if device is not None else pick_device()
    was_training = model.training
    model.to(device).eval()
    feature_batches, label_batches = [], []
    if isinstance(data, DataLoader):
        smaller = "a DataLoader with batch_size={batch_size}"
    else:
        smaller = "extract_features(..., batch_size={batch_size})"
    try:
        with _explain_out_of_memory("extract_features", _batch_size_of(loader), smaller), torch.no_grad():
            bar = _progress_bar(loader, desc="features", show=_show_progress(progress))
            for inputs, targets in bar:
                outputs = model(inputs.to(device))
                feature_batches.append(outputs.reshape(outputs.shape[0], -1).float().cpu())
                label_batches.append(torch.as_tensor(targets).long().cpu())
    finally:
        model.train(was_training)
    if not feature_batches:
        raise ValueError("data holds no samples, so there are no features to extract")
    features, labels = torch.cat(feature_batches), torch.cat(label_batches)
    if cache_file is not None:
        _remove_stale_caches(cache_file)
        _atomic_save({"features": features, "labels": labels}, cache_file)
    return features, labels


def train_linear_head(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 32,
    weight_decay: float = 0.0,
    seed: int = 0,
    device=None,
) -> tuple[nn.Linear, History]:
    """Train a fresh ``nn.Linear`` on cached features with Adam: the fast path on a CPU.

    Seeded (initialisation and shuffling) without touching the global random state.
    Returns ``(head, history)``; the head is on the CPU, ready to sit on top of the frozen backbone.
    Defined in 04_training_the_head.
    """
    if train_features.ndim != 2 or train_labels.shape != (train_features.shape[0],):
        raise ValueError(
            "train_features must be [N, D] and train_labels [N]; got "
            f"{tuple(train_features.shape)} and {tuple(train_labels.shape)}"
        )
    if (val_features is None) != (val_labels is None):
        raise ValueError("pass both val_features and val_labels, or neither")
    num_classes = int(train_labels.max()) + 1
    if val_labels is not None:
        num_classes = max(num_classes, int(val_labels.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(train_features.shape[1], num_classes)
    train_loader = DataLoader(
        TensorDataset(train_features.float(), train_labels.long()),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = None
    if val_features is not None:
        val_loader = DataLoader(TensorDataset(val_features.float(), val_labels.long()), batch_size=256)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    device = torch.device(device) if device is not None else torch.device("cpu")
    with _one_cpu_thread(device):
        history = fit(head, train_loader, val_loader, optimizer, epochs=epochs, device=device, progress=False)
    return head.cpu(), history


def _class_names_of(dataset) -> list[str] | None:
    """The class names of an ImageFolder, also through Subsets; None for other datasets."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return list(classes) if isinstance(classes, (list, tuple)) else None


def _check_outputs_fit_classes(outputs: torch.Tensor, classes: list[str] | None, call: str) -> None:
    if classes is None or outputs.ndim != 2 or outputs.shape[1] == len(classes):
        return
    raise ValueError(
        f"{call}: the model outputs {outputs.shape[1]} class scores, but the data has {len(classes)} "
        f"classes ({', '.join(classes)}). Was the model (or its checkpoint) trained on other data? Build it "
        "with replace_head(model, num_classes=len(classes)) and train it, or load the checkpoint made for "
        "this data."
    )


def predict(
    model: nn.Module, data, device=None, *, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class predictions over ``data``: ``(predictions [N], labels [N], probabilities [N, C])``.

    ``data`` is a Dataset or DataLoader of ``(input, label)`` pairs; runs in eval mode without gradients
    and leaves the model's train/eval mode as it was. When the data knows its class names (an image
    folder, or a Subset of one), the model must output one score per class. Defined in 04_training_the_head.
    """
    loader = _as_loader(data, batch_size=batch_size)
    device = torch.device(device) if device is not None else pick_device()
    classes = _class_names_of(loader.dataset)
    was_training = model.training
    model.to(device).eval()
    probability_batches, label_batches = [], []
    if isinstance(data, DataLoader):
        smaller = "a DataLoader with batch_size={batch_size}"
    else:
        smaller = "predict(..., batch_size={batch_size})"
    try:
        with _explain_out_of_memory("predict", _batch_size_of(loader), smaller), torch.no_grad():
            for inputs, targets in loader:
                outputs = model(inputs.to(device))
                if not probability_batches:
                    _check_outputs_fit_classes(outputs, classes, "predict")
                    _check_outputs_fit_labels(outputs, torch.as_tensor(targets), "predict")
                probability_batches.append(torch.softmax(outputs.float(), dim=1).cpu())
                label_batches.append(torch.as_tensor(targets).long().cpu())
    finally:
        model.train(was_training)
    if not probability_batches:
        raise ValueError("data holds no samples, so there is nothing to predict")
    probabilities = torch.cat(probability_batches)
    return probabilities.argmax(dim=1), torch.cat(label_batches), probabilities


_PLAIN_TYPES = (bool, int, float, str, type(None))


def _check_plain(value, where: str) -> None:
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint metadata {where} is a {type(value).__name__}; use plain numbers, strings, "
        "lists and dicts (e.g. history.as_dict())"
    )


def save_checkpoint(model: nn.Module, path, **metadata) -> Path:
    """Save the model's weights and plain-Python ``metadata`` to ``path`` (parent folders created).

    The file appears whole or not at all (written to a temporary file, then renamed).
    Defined in 05_fine_tuning.
    """
    for key, value in metadata.items():
        _check_plain(value, key)
    path = Path(path)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    _atomic_save({"format": _CHECKPOINT_FORMAT, "state_dict": state, "metadata": metadata}, path)
    return path


def _shape_mismatches(saved: dict, model: nn.Module) -> list[tuple[str, tuple, tuple]]:
    expected = model.state_dict()
    return [
        (name, tuple(tensor.shape), tuple(expected[name].shape))
        for name, tensor in saved.items()
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape)
    ]


def _head_mismatch_message(path: Path, model: nn.Module, saved: dict, metadata: dict) -> str | None:
    """When only the classification head differs in size: a message naming both class counts."""
    try:
        head_name, head = find_head(model)
    except ValueError:
        return None
    if set(saved) != set(model.state_dict()):
        return None
    mismatches = _shape_mismatches(saved, model)
    head_keys = {f"{head_name}.weight", f"{head_name}.bias"}
    if not mismatches or any(name not in head_keys for name, _, _ in mismatches):
        return None
    saved_classes = saved[f"{head_name}.weight"].shape[0]
    names = metadata.get("classes") if isinstance(metadata, dict) else None
    saved_names = f" ({', '.join(map(str, names))})" if isinstance(names, list) else ""
    return (
        f"Checkpoint {path} was saved from a model with {saved_classes} classes{saved_names}, but this "
        f"{type(model).__name__} has {head.out_features} outputs (`{head_name}`). Build the model with "
        f"replace_head(model, num_classes={saved_classes}) to load this checkpoint, or train and save a new "
        "one for the data you are using now."
    )


def load_checkpoint(model: nn.Module, path, map_location="cpu", *, classes=None) -> dict:
    """Load weights saved by ``save_checkpoint`` into ``model``; return the saved metadata.

    Raises ``FileNotFoundError`` or ``RuntimeError`` naming the file when it is missing, damaged,
    or saved from a different architecture; a head of another size names both class counts. With
    ``classes`` (the class names of your data), a checkpoint whose saved ``classes`` metadata differs
    is refused with a ``ValueError`` naming both lists. Defined in 05_fine_tuning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: train first (fit(..., checkpoint_path=...)).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise RuntimeError(
            f"Checkpoint {path} is damaged or not a torch file ({error}); delete it and train again."
        ) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path} was not written by tlhelpers.save_checkpoint")
    metadata = checkpoint.get("metadata", {})
    saved_classes = metadata.get("classes") if isinstance(metadata, dict) else None
    if classes is not None and saved_classes is not None and list(saved_classes) != list(classes):
        raise ValueError(
            f"Checkpoint {path} was trained on {len(saved_classes)} classes {list(saved_classes)}, but your "
            f"data has {len(classes)} classes {list(classes)}. Use the checkpoint saved for this data, or "
            "train and save a new one."
        )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        message = _head_mismatch_message(path, model, checkpoint["state_dict"], metadata)
        if message is not None:
            raise RuntimeError(message) from error
        raise RuntimeError(
            f"Checkpoint {path} does not fit {type(model).__name__} (was it saved from another model "
            f"or another number of classes?):\n{error}"
        ) from error
    return checkpoint["metadata"]
