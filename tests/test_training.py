"""Training utilities on tiny synthetic data: fit, History, feature cache, linear head, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tlhelpers import training
from tlhelpers.training import (
    GPUOutOfMemoryError,
    History,
    extract_features,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
    train_linear_head,
    train_one_epoch,
)
from tlhelpers.utils import set_seed

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors gain nothing from threads, and on a busy machine OpenMP threads wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def toy_images(n: int = 64, seed: int = 0) -> TensorDataset:
    """Class 1 images are bright, class 0 images dark: separable by the mean pixel value."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 3, 8, 8, generator=generator) * 0.5 + (labels.float() * 2 - 1).view(-1, 1, 1, 1)
    return TensorDataset(images, labels)


def toy_loaders(batch_size: int = 16):
    train = DataLoader(
        toy_images(64, seed=0),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(toy_images(32, seed=1), batch_size=batch_size)
    return train, val


def separable_features(n: int = 200, dim: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centers = torch.randn(2, dim, generator=generator) * 2
    features = centers[labels] + torch.randn(n, dim, generator=generator)
    return features, labels


# ---------------------------------------------------------------- History and fit


def test_history_properties_and_dict():
    history = History(train_loss=[1.0, 0.5], val_acc=[0.6, 0.8], seconds=[1.5, 2.0])
    assert history.best_val_acc == 0.8
    assert history.total_seconds == pytest.approx(3.5)
    assert History().best_val_acc is None
    as_dict = history.as_dict()
    assert set(as_dict) == {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    as_dict["val_acc"].append(1.0)
    assert history.val_acc == [0.6, 0.8], "as_dict must copy the lists"


def test_fit_lowers_the_loss_and_records_every_epoch():
    set_seed(0)
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, train_loader, val_loader, optimizer, epochs=6, device=CPU, progress=False)
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds"):
        assert len(getattr(history, name)) == 6, name
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_acc[-1] >= 0.9
    assert all(0.0 <= acc <= 1.0 for acc in history.train_acc + history.val_acc)
    assert all(seconds > 0 for seconds in history.seconds)


def test_fit_without_validation_leaves_val_lists_empty():
    model = tiny_net()
    train_loader, _ = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    history = fit(model, train_loader, None, optimizer, epochs=1, device=CPU, progress=False)
    assert len(history.train_loss) == 1 and history.val_acc == [] and history.best_val_acc is None


def test_fit_saves_the_best_epoch_checkpoint(tmp_path):
    set_seed(0)
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "runs" / "best.pt"
    history = fit(
        model, train_loader, val_loader, optimizer, epochs=4, device=CPU, checkpoint_path=path, progress=False
    )
    restored = tiny_net()
    metadata = load_checkpoint(restored, path)
    assert metadata["val_acc"] == history.best_val_acc
    assert metadata["epoch"] == history.val_acc.index(history.best_val_acc) + 1
    assert restored(toy_images(8)[:][0]).shape == (8, 2)


def test_fit_needs_validation_to_pick_a_checkpoint(tmp_path):
    model = tiny_net()
    train_loader, _ = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="val_loader"):
        fit(model, train_loader, None, optimizer, epochs=1, device=CPU, checkpoint_path=tmp_path / "x.pt")


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_fit_freeze_bn_keeps_batchnorm_statistics(freeze_bn):
    set_seed(0)
    model = tiny_net()
    batchnorm = model[1]
    before = batchnorm.running_mean.clone()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    fit(model, train_loader, val_loader, optimizer, epochs=1, device=CPU, freeze_bn=freeze_bn, progress=False)
    assert torch.equal(batchnorm.running_mean, before) == freeze_bn
    assert batchnorm.weight.requires_grad != freeze_bn


def test_fit_steps_the_scheduler_once_per_epoch():
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(model, train_loader, val_loader, optimizer, epochs=2, device=CPU, scheduler=scheduler, progress=False)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_fit_with_amp_requested_on_cpu_trains_in_full_precision():
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    history = fit(model, train_loader, val_loader, optimizer, epochs=1, device=CPU, amp=True, progress=False)
    assert len(history.train_loss) == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_with_mixed_precision_on_cuda():
    set_seed(0)
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, train_loader, val_loader, optimizer, epochs=4, device="cuda", progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert next(model.parameters()).dtype == torch.float32


def test_progress_bars_go_to_stdout_never_stderr(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    fit(model, train_loader, val_loader, torch.optim.Adam(model.parameters()), epochs=1, device=CPU)
    extract_features(nn.Flatten(), toy_images(8), CPU, batch_size=4)
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.out and "features" in captured.out
    assert captured.err == ""


def test_progress_bars_are_widgets_in_a_notebook(capsys, monkeypatch):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setattr(training, "_notebook_widgets_available", lambda: True)
    bars = []
    monkeypatch.setattr("tqdm.notebook.tqdm.display", lambda self, *args, **kwargs: bars.append(self))
    extract_features(nn.Flatten(), toy_images(8), CPU, batch_size=4)
    assert bars and all(isinstance(bar, notebook_tqdm) for bar in bars)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["autograde", "1"])
def test_no_progress_output_under_nbgrader(capsys, monkeypatch, value):
    monkeypatch.setenv("NBGRADER_EXECUTION", value)
    monkeypatch.setattr(training, "_notebook_widgets_available", lambda: True)  # not even a widget
    model = tiny_net()
    train_loader, val_loader = toy_loaders()
    fit(model, train_loader, val_loader, torch.optim.Adam(model.parameters()), epochs=1, device=CPU)
    extract_features(nn.Flatten(), toy_images(8), CPU)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# ---------------------------------------------------------------- extract_features and its cache


class CountingFlatten(nn.Module):
    """A feature model that counts its forward calls, with one weight so that it has a checksum."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images.mean(dim=(2, 3)) * self.scale


def test_extract_features_shapes_labels_and_mode():
    model = tiny_net()[:5]
    model.train()
    features, labels = extract_features(model, toy_images(20), CPU, batch_size=8, progress=False)
    assert features.shape == (20, 4) and features.dtype == torch.float32
    assert torch.equal(labels, toy_images(20).tensors[1])
    assert model.training, "the model's train/eval mode must be restored"
    with torch.no_grad():
        model.eval()
        assert torch.allclose(features, model(toy_images(20).tensors[0]))


def test_extract_features_accepts_a_dataloader_and_flattens():
    loader = DataLoader(toy_images(10), batch_size=4)
    features, labels = extract_features(nn.Identity(), loader, CPU, progress=False)
    assert features.shape == (10, 3 * 8 * 8) and labels.shape == (10,)


def test_feature_cache_miss_then_hit(tmp_path):
    model = CountingFlatten()
    first = extract_features(model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False)
    calls_after_first = model.calls
    assert calls_after_first > 0
    assert len(list((tmp_path / "features").glob("toy-*.pt"))) == 1
    second = extract_features(model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False)
    assert model.calls == calls_after_first, "a cache hit must not run the model"
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_feature_cache_is_not_reused_after_the_model_changes(tmp_path):
    model = CountingFlatten()
    extract_features(model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False)
    with torch.no_grad():
        model.scale.fill_(2.0)
    calls = model.calls
    features, _ = extract_features(
        model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False
    )
    assert model.calls > calls
    assert torch.allclose(features, toy_images(16).tensors[0].mean(dim=(2, 3)) * 2)
    assert len(list((tmp_path / "features").glob("toy-*.pt"))) == 1, "the stale file is removed"


def test_feature_cache_is_not_reused_after_the_data_changes(tmp_path):
    model = CountingFlatten()
    extract_features(model, toy_images(16, seed=0), CPU, cache_dir=tmp_path, cache_key="toy", progress=False)
    calls = model.calls
    extract_features(model, toy_images(16, seed=5), CPU, cache_dir=tmp_path, cache_key="toy", progress=False)
    assert model.calls > calls


class FileBackedImages(Dataset):
    """Mimics ImageFolder: ``samples`` of (path, label) pairs and a ``transform``."""

    def __init__(self, paths, transform="eval"):
        self.samples = [(str(path), index % 2) for index, path in enumerate(paths)]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return torch.full((3, 2, 2), float(len(open(path).read()))), label


def test_feature_cache_fingerprints_the_files_and_transform(tmp_path):
    paths = [tmp_path / f"image{index}.txt" for index in range(4)]
    for path in paths:
        path.write_text("x")
    model = CountingFlatten()
    cache = tmp_path / "cache"
    extract_features(model, FileBackedImages(paths), CPU, cache_dir=cache, cache_key="files", progress=False)
    calls = model.calls
    extract_features(model, FileBackedImages(paths), CPU, cache_dir=cache, cache_key="files", progress=False)
    assert model.calls == calls, "same files and transform: a hit"
    paths[0].write_text("xxx")
    features, _ = extract_features(
        model, FileBackedImages(paths), CPU, cache_dir=cache, cache_key="files", progress=False
    )
    assert model.calls > calls, "a file changed size: a miss"
    assert features[0, 0] == 3.0
    calls = model.calls
    extract_features(
        model,
        FileBackedImages(paths, transform="train"),
        CPU,
        cache_dir=cache,
        cache_key="files",
        progress=False,
    )
    assert model.calls > calls, "another transform: a miss"


def test_corrupt_feature_cache_is_deleted_and_recomputed(tmp_path, capsys):
    model = CountingFlatten()
    expected, _ = extract_features(
        model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False
    )
    (cache_file,) = (tmp_path / "features").glob("toy-*.pt")
    cache_file.write_bytes(b"this is not a torch file")
    calls = model.calls
    features, _ = extract_features(
        model, toy_images(16), CPU, cache_dir=tmp_path, cache_key="toy", progress=False
    )
    assert model.calls > calls
    assert torch.equal(features, expected)
    assert str(cache_file) in capsys.readouterr().out
    assert torch.load(cache_file, weights_only=True)["features"].shape == (16, 3)


def test_feature_cache_keys_that_share_a_prefix_do_not_evict_each_other(tmp_path):
    model = CountingFlatten()
    extract_features(model, toy_images(8), CPU, cache_dir=tmp_path, cache_key="train", progress=False)
    extract_features(model, toy_images(8), CPU, cache_dir=tmp_path, cache_key="train-flipped", progress=False)
    names = sorted(path.name.rsplit("-", 1)[0] for path in (tmp_path / "features").glob("*.pt"))
    assert names == ["train", "train-flipped"]


def test_feature_cache_defaults_to_tl_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE", str(tmp_path))
    extract_features(CountingFlatten(), toy_images(8), CPU, cache_key="default", progress=False)
    assert len(list((tmp_path / "features").glob("default-*.pt"))) == 1


def test_extract_features_rejects_other_data():
    with pytest.raises(TypeError, match="Dataset or DataLoader"):
        extract_features(nn.Identity(), [torch.zeros(3)], CPU)


# ---------------------------------------------------------------- train_linear_head and predict


def test_train_linear_head_separates_separable_features():
    train_features, train_labels = separable_features(200, seed=0)
    val_features, val_labels = separable_features(100, seed=0)
    head, history = train_linear_head(
        train_features, train_labels, val_features, val_labels, epochs=10, lr=0.01
    )
    assert isinstance(head, nn.Linear) and head.out_features == 2 and head.in_features == 32
    assert len(history.train_loss) == len(history.val_acc) == 10
    assert history.val_acc[-1] >= 0.95
    assert history.train_loss[-1] < history.train_loss[0]


def test_train_linear_head_is_seeded_and_leaves_global_state_alone():
    features, labels = separable_features(64)
    state = torch.get_rng_state()
    torch.set_num_threads(2)
    first, _ = train_linear_head(features, labels, epochs=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == 2, "the thread count is restored"
    second, _ = train_linear_head(features, labels, epochs=2, seed=3)
    other, _ = train_linear_head(features, labels, epochs=2, seed=4)
    assert torch.equal(first.weight, second.weight)
    assert not torch.equal(first.weight, other.weight)


def test_train_linear_head_checks_shapes():
    with pytest.raises(ValueError, match="train_labels"):
        train_linear_head(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="val_labels"):
        train_linear_head(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(2, 3))


def test_predict_returns_predictions_labels_and_probabilities():
    model = tiny_net(num_classes=3)
    model.train()
    predictions, labels, probabilities = predict(model, toy_images(10), CPU)
    assert predictions.shape == labels.shape == (10,)
    assert probabilities.shape == (10, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(10))
    assert torch.equal(predictions, probabilities.argmax(dim=1))
    assert torch.equal(labels, toy_images(10).tensors[1])
    assert model.training


class FolderLike(TensorDataset):
    """A TensorDataset that knows its class names, as an ImageFolder does."""

    def __init__(self, *tensors, classes):
        super().__init__(*tensors)
        self.classes = classes


def test_predict_refuses_a_model_with_another_number_of_classes():
    images = toy_images(6)
    data = FolderLike(*images.tensors, classes=["ants", "bees", "wasps"])
    with pytest.raises(
        ValueError, match="outputs 2 class scores, but the data has 3 classes \\(ants, bees, wasps\\)"
    ):
        predict(tiny_net(num_classes=2), torch.utils.data.Subset(data, [0, 1, 2]), CPU)


def test_fit_refuses_labels_the_model_has_no_output_for():
    model = tiny_net(num_classes=2)
    images = toy_images(8)
    loader = DataLoader(TensorDataset(images.tensors[0], torch.arange(8) % 3), batch_size=4)
    with pytest.raises(ValueError, match="outputs 2 class scores, but the data has a label 2"):
        fit(model, loader, None, torch.optim.Adam(model.parameters()), epochs=1, device=CPU, progress=False)


# ---------------------------------------------------------------- running out of GPU memory


class OutOfMemoryNet(nn.Module):
    """Raises the error CUDA raises when its memory is full (the class can be made on a CPU too)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def assert_explains_out_of_memory(caught, call: str, batch_size: int, suggestion: str):
    error = caught.value
    assert isinstance(error, torch.cuda.OutOfMemoryError) and isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, torch.cuda.OutOfMemoryError), "the original is chained"
    message = str(error)
    assert message.startswith(f"{call} ran out of GPU memory with batch size {batch_size}.")
    assert suggestion in message
    assert "Free memory first: `del`" in message and "torch.cuda.empty_cache()" in message
    assert "Tried to allocate 2.00 GiB" in message


def test_out_of_memory_in_fit_says_which_batch_size_to_try():
    model = OutOfMemoryNet()
    loader = DataLoader(toy_images(8), batch_size=8)
    with pytest.raises(GPUOutOfMemoryError) as caught:
        fit(model, loader, None, torch.optim.Adam(model.parameters()), epochs=1, device=CPU, progress=False)
    assert_explains_out_of_memory(caught, "fit", 8, "a train_loader with batch_size=4")


def test_out_of_memory_in_validation_names_the_val_loader():
    model, train_loader = tiny_net(), DataLoader(toy_images(4), batch_size=4)
    val_loader = DataLoader(toy_images(4), batch_size=32)
    calls = []

    def forward_then_fail(module, inputs):
        calls.append(module.training)
        if not module.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(forward_then_fail)
    with pytest.raises(GPUOutOfMemoryError) as caught:
        fit(model, train_loader, val_loader, torch.optim.Adam(model.parameters()), epochs=1, device=CPU)
    assert_explains_out_of_memory(caught, "fit (validation)", 32, "a val_loader with batch_size=16")


def test_out_of_memory_in_extract_features_predict_and_train_one_epoch():
    with pytest.raises(GPUOutOfMemoryError) as caught:
        extract_features(OutOfMemoryNet(), toy_images(8), CPU, batch_size=64)
    assert_explains_out_of_memory(caught, "extract_features", 64, "extract_features(..., batch_size=32)")
    with pytest.raises(GPUOutOfMemoryError) as caught:
        predict(OutOfMemoryNet(), DataLoader(toy_images(8), batch_size=16), CPU)
    assert_explains_out_of_memory(caught, "predict", 16, "a DataLoader with batch_size=8")
    model = OutOfMemoryNet()
    with pytest.raises(GPUOutOfMemoryError) as caught:
        train_one_epoch(
            model,
            DataLoader(toy_images(8), batch_size=2),
            torch.optim.Adam(model.parameters()),
            nn.CrossEntropyLoss(),
            CPU,
        )
    assert_explains_out_of_memory(caught, "train_one_epoch", 2, "a DataLoader with batch_size=1")


def test_out_of_memory_with_a_batch_of_one_suggests_other_ways():
    with pytest.raises(GPUOutOfMemoryError, match="batch size 1. A batch of 1 is already the smallest. Free"):
        extract_features(OutOfMemoryNet(), toy_images(2), CPU, batch_size=1)


def test_other_errors_pass_through_unchanged():
    class Broken(nn.Module):
        def forward(self, inputs):
            raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="^shapes do not match$"):
        extract_features(Broken(), toy_images(2), CPU)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    model = tiny_net()
    path = save_checkpoint(
        model, tmp_path / "deep" / "folder" / "model.pt", epoch=3, history={"val_acc": [0.5]}
    )
    restored = tiny_net()
    assert not torch.equal(restored[0].weight, model[0].weight)
    metadata = load_checkpoint(restored, path)
    assert metadata == {"epoch": 3, "history": {"val_acc": [0.5]}}
    for (name, expected), actual in zip(
        model.state_dict().items(), restored.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"], "no temporary files left behind"


def test_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tiny_net(), path)


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="broken.pt"):
        load_checkpoint(tiny_net(), path)


def test_checkpoint_with_another_number_of_classes_names_both(tmp_path):
    path = save_checkpoint(tiny_net(num_classes=5), tmp_path / "five.pt", classes=list("abcde"))
    with pytest.raises(RuntimeError) as caught:
        load_checkpoint(tiny_net(num_classes=2), path)
    message = str(caught.value)
    assert "five.pt" in message and "5 classes (a, b, c, d, e)" in message and "has 2 outputs" in message
    assert "replace_head(model, num_classes=5)" in message


def test_checkpoint_of_other_classes_is_refused_when_classes_are_given(tmp_path):
    path = save_checkpoint(tiny_net(num_classes=2), tmp_path / "pets.pt", classes=["cats", "dogs"])
    with pytest.raises(ValueError, match=r"pets.pt.*\['cats', 'dogs'\].*\['ants', 'bees'\]"):
        load_checkpoint(tiny_net(num_classes=2), path, classes=["ants", "bees"])
    assert load_checkpoint(tiny_net(num_classes=2), path, classes=["cats", "dogs"])["classes"] == [
        "cats",
        "dogs",
    ]


def test_checkpoint_of_another_model_names_the_file(tmp_path):
    path = save_checkpoint(tiny_net(num_classes=5), tmp_path / "five.pt")
    with pytest.raises(RuntimeError, match="five.pt"):
        load_checkpoint(tiny_net(num_classes=2), path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tiny_net().state_dict(), path)
    with pytest.raises(RuntimeError, match="weights.pt"):
        load_checkpoint(tiny_net(), path)


def test_checkpoint_metadata_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match="history"):
        save_checkpoint(tiny_net(), tmp_path / "x.pt", history=History())
    assert not (tmp_path / "x.pt").exists()


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tiny_net(), tmp_path / "model.pt", epoch=1)

    def save_half_then_fail(obj, file):
        with open(file, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_net(), path, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(tiny_net(), path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# ---------------------------------------------------------------- the demo's logic, with stand-ins


class FakeBackbone:
    name = "fake"
    reason = "a stand-in for the test"
    feature_dim = 3

    def __init__(self):
        self.model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1000))
        self.transforms = None


def run_fake_demo(monkeypatch, tmp_path, shuffle_labels: bool):
    from tlhelpers import demo
    from tlhelpers.data import Splits

    # As many training images as the real demo, so that its 30 epochs of small Adam steps suffice.
    train, val = toy_images(256, seed=0), toy_images(32, seed=1)
    if shuffle_labels:
        train = TensorDataset(train.tensors[0], torch.randperm(256, generator=torch.Generator()) % 2)
    monkeypatch.setenv("TL_CACHE", str(tmp_path))
    monkeypatch.setattr(demo, "load_pretrained", lambda: FakeBackbone())
    monkeypatch.setattr(
        demo, "load_hymenoptera", lambda **_: Splits(train, val, ["dark", "bright"], tmp_path / "data")
    )
    demo.main()


def test_demo_reports_accuracy_and_caches_features(monkeypatch, tmp_path, capsys):
    run_fake_demo(monkeypatch, tmp_path, shuffle_labels=False)
    out = capsys.readouterr().out
    assert "Backbone: fake" in out and "256 training and 32 validation images" in out
    assert "OK: 1.000" in out
    assert len(list((tmp_path / "features").glob("hymenoptera-*-fake-*.pt"))) == 2


def test_demo_fails_below_target(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="below the target"):
        run_fake_demo(monkeypatch, tmp_path, shuffle_labels=True)
