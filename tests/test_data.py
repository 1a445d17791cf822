"""Tests for tlhelpers.data on tiny synthetic folders, plus the real shared ants-vs-bees data when present.

No test touches the network: the probe and the download are replaced in every test.
"""

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tlhelpers import data
from tlhelpers.data import (
    EXCLUDED_FILES,
    HYMENOPTERA_COUNTS,
    DataError,
    DataNotFoundError,
    check_same_classes,
    eval_transforms,
    find_hymenoptera,
    find_image_data,
    find_split,
    image_folder,
    load_hymenoptera,
    make_loaders,
    train_transforms,
    unpack_zip,
    verify_image_folder,
)

PLACEHOLDER = "imageNotFound.gif"


def _real_data_parent() -> Path | None:
    candidates = [os.environ.get("TL_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


REAL_DATA = _real_data_parent()
REAL_PROBE = data._network_available


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real env, an empty cache, and a network that fails the test if anything reaches for it."""

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.delenv("TL_DATA", raising=False)
    monkeypatch.setenv("TL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_network_available", no_network)
    monkeypatch.setattr(data, "download_url", no_network)
    data._verified_images.clear()
    data._announced_exclusions.clear()


def _raises_naming(path, match_type=DataError):
    return pytest.raises(match_type, match=re.escape(str(path)))


# ---------------------------------------------------------------- verify_image_folder / image_folder


def test_verify_reports_classes_and_counts(tiny_image_folder):
    report = verify_image_folder(tiny_image_folder)
    assert report.classes == ["cats", "dogs"]
    assert report.counts == {"cats": 4, "dogs": 3}
    assert report.num_images == 7
    assert report.excluded == [] and report.ignored == []
    assert "7 images in 2 classes" in str(report)


def test_image_folder_has_samples_targets_and_loads_tensors(tiny_image_folder):
    dataset = image_folder(tiny_image_folder, transform=T.ToTensor())
    assert dataset.classes == ["cats", "dogs"]
    assert dataset.targets == [0, 0, 0, 0, 1, 1, 1]
    assert [Path(path).name for path, _ in dataset.samples[:2]] == ["cat0.jpg", "cat1.jpg"]
    image, target = dataset[6]
    assert image.shape == (3, 8, 8) and target == 1


def test_verification_is_cached_per_file_until_the_file_changes(tiny_image_folder, monkeypatch):
    verify_image_folder(tiny_image_folder)

    def must_not_open(*args, **kwargs):
        raise AssertionError("image reopened although unchanged")

    with monkeypatch.context() as patch:
        patch.setattr(data.Image, "open", must_not_open)
        assert verify_image_folder(tiny_image_folder).num_images == 7

    changed = tiny_image_folder / "dogs" / "dog1.png"
    changed.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with _raises_naming(changed):
        verify_image_folder(tiny_image_folder)


def test_missing_folder(tmp_path):
    with _raises_naming(tmp_path / "nowhere", DataError) as caught:
        verify_image_folder(tmp_path / "nowhere")
    assert "does not exist" in str(caught.value)


def test_path_is_a_file(tmp_path, make_image):
    file = make_image(tmp_path / "one.jpg")
    with _raises_naming(file):
        verify_image_folder(file)


def test_no_class_subfolders_explains_layout(tmp_path, make_image):
    make_image(tmp_path / "flat" / "a.jpg")
    with _raises_naming(tmp_path / "flat") as caught:
        verify_image_folder(tmp_path / "flat")
    assert "<class name>/<image>.jpg" in str(caught.value)


def test_images_directly_in_the_folder_say_to_move_them(tmp_path, make_image):
    for index in range(5):
        make_image(tmp_path / "flat" / f"img{index}.jpg")
    with _raises_naming(tmp_path / "flat") as caught:
        verify_image_folder(tmp_path / "flat")
    assert "holds 5 images directly (img0.jpg, img1.jpg, img2.jpg, ...)" in str(caught.value)
    assert "move them into one subfolder per class" in str(caught.value)


def test_single_class_is_refused(tmp_path, make_image):
    make_image(tmp_path / "one" / "ants" / "a.jpg")
    with _raises_naming(tmp_path / "one") as caught:
        verify_image_folder(tmp_path / "one")
    assert "at least 2" in str(caught.value)
    assert "'ants'" in str(caught.value) and "add a subfolder of images for each other class" in str(
        caught.value
    )


def test_empty_class_folder(tiny_image_folder):
    (tiny_image_folder / "birds").mkdir()
    with _raises_naming(tiny_image_folder / "birds") as caught:
        verify_image_folder(tiny_image_folder)
    assert "no images" in str(caught.value)


def test_min_images_per_class(tiny_image_folder):
    with _raises_naming(tiny_image_folder / "dogs") as caught:
        verify_image_folder(tiny_image_folder, min_images_per_class=4)
    assert "only 3 images" in str(caught.value) and "need at least 4" in str(caught.value)
    assert "add images of that class, or remove the folder" in str(caught.value)


def test_file_without_read_permission(tiny_image_folder, monkeypatch):
    locked = tiny_image_folder / "cats" / "cat0.jpg"

    def no_permission(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(data, "open", no_permission, raising=False)  # shadows the builtin inside data.py
    with _raises_naming(locked) as caught:
        verify_image_folder(tiny_image_folder)
    assert "cannot be read" in str(caught.value) and "permissions" in str(caught.value)


def test_split_folder_passed_instead_of_one_split(tmp_path, make_image):
    for split in ("train", "val"):
        make_image(tmp_path / "set" / split / "ants" / "a.jpg")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "set" / "train"))):
        verify_image_folder(tmp_path / "set")


def test_corrupt_image(tiny_image_folder):
    bad = tiny_image_folder / "cats" / "broken.jpg"
    bad.write_bytes(bytes(range(256)) * 4)
    with _raises_naming(bad) as caught:
        verify_image_folder(tiny_image_folder)
    assert "corrupt or truncated" in str(caught.value)


def test_truncated_image(tiny_image_folder):
    whole = tiny_image_folder / "cats" / "big.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(whole)
    truncated = tiny_image_folder / "cats" / "cut.jpg"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with _raises_naming(truncated):
        verify_image_folder(tiny_image_folder)


def test_git_lfs_pointer(tiny_image_folder):
    pointer = tiny_image_folder / "dogs" / "lfs.jpg"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 12345\n"
    )
    with _raises_naming(pointer) as caught:
        verify_image_folder(tiny_image_folder)
    assert "git lfs pull" in str(caught.value)


def test_text_file_named_jpg(tiny_image_folder):
    text = tiny_image_folder / "dogs" / "notes.jpg"
    text.write_text("<html>404 Not Found</html>\n")
    with _raises_naming(text) as caught:
        verify_image_folder(tiny_image_folder)
    assert "text file" in str(caught.value)


def test_empty_file(tiny_image_folder):
    empty = tiny_image_folder / "dogs" / "empty.png"
    empty.write_bytes(b"")
    with _raises_naming(empty) as caught:
        verify_image_folder(tiny_image_folder)
    assert "0 bytes" in str(caught.value)


def test_bad_image_stops_image_folder_before_any_loader(tiny_image_folder):
    bad = tiny_image_folder / "cats" / "broken.png"
    bad.write_bytes(b"not really a png")
    with _raises_naming(bad):
        image_folder(tiny_image_folder)


def test_placeholder_is_excluded_listed_and_announced_once(tiny_image_folder, make_image, capsys):
    placeholder = make_image(tiny_image_folder / "cats" / PLACEHOLDER)
    assert PLACEHOLDER in EXCLUDED_FILES
    dataset = image_folder(tiny_image_folder)
    assert placeholder not in [Path(path) for path, _ in dataset.samples]
    assert len(dataset) == 7
    assert dataset.excluded == [placeholder]
    first = capsys.readouterr().out
    assert first.count(PLACEHOLDER) == 1 and "not a photo" in first
    image_folder(tiny_image_folder)
    assert capsys.readouterr().out == ""


def test_hidden_entries_are_skipped(tiny_image_folder):
    (tiny_image_folder / ".ipynb_checkpoints").mkdir()
    (tiny_image_folder / "cats" / "._cat0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    dataset = image_folder(tiny_image_folder)
    assert dataset.classes == ["cats", "dogs"]
    assert len(dataset) == 7


def test_other_files_are_ignored_and_mentioned(tiny_image_folder, capsys):
    (tiny_image_folder / "cats" / "README.txt").write_text("where these came from")
    dataset = image_folder(tiny_image_folder)
    assert len(dataset) == 7
    assert dataset.report.ignored == [tiny_image_folder / "cats" / "README.txt"]
    assert "README.txt" in capsys.readouterr().out


def test_gif_images_are_used(tiny_image_folder, make_image):
    make_image(tiny_image_folder / "dogs" / "moving.gif")
    assert verify_image_folder(tiny_image_folder).counts["dogs"] == 4


# ---------------------------------------------------------------- find_hymenoptera


def _make_hymenoptera(parent: Path, counts=HYMENOPTERA_COUNTS) -> Path:
    folder = parent / "hymenoptera_data"
    for split, per_class in counts.items():
        for class_name, count in per_class.items():
            class_folder = folder / split / class_name
            class_folder.mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (4, 4), (index % 256, 90, 160)).save(class_folder / f"{index}.jpg")
    Image.new("RGB", (4, 4), (128, 128, 128)).save(folder / "train" / "ants" / PLACEHOLDER)
    return folder


@pytest.fixture(scope="module")
def fake_hymenoptera(tmp_path_factory) -> Path:
    """A folder laid out and counted like the real data, with 4x4 images (read-only use)."""
    return _make_hymenoptera(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def fake_archive(fake_hymenoptera, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("archive") / "hymenoptera_data"
    return Path(shutil.make_archive(str(base), "zip", fake_hymenoptera.parent, "hymenoptera_data"))


def test_root_may_be_parent_or_folder_itself(fake_hymenoptera):
    assert find_hymenoptera(fake_hymenoptera.parent, download=False) == fake_hymenoptera
    assert find_hymenoptera(fake_hymenoptera, download=False) == fake_hymenoptera


@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_tl_data_may_be_parent_or_folder_itself(fake_hymenoptera, monkeypatch, point_at):
    target = fake_hymenoptera.parent if point_at == "parent" else fake_hymenoptera
    monkeypatch.setenv("TL_DATA", str(target))
    assert find_hymenoptera(download=False) == fake_hymenoptera


def test_relative_paths_are_taken_from_the_current_folder(fake_hymenoptera, monkeypatch):
    monkeypatch.chdir(fake_hymenoptera.parent.parent)
    relative = Path(fake_hymenoptera.parent.name)
    assert find_hymenoptera(relative, download=False) == fake_hymenoptera
    monkeypatch.setenv("TL_DATA", str(relative / "hymenoptera_data"))
    assert find_hymenoptera(download=False) == fake_hymenoptera


def test_lookup_order_root_then_env_then_cache(fake_hymenoptera, tmp_path, monkeypatch):
    cache_copy = tmp_path / "cache" / "hymenoptera_data"
    shutil.copytree(fake_hymenoptera, cache_copy)
    assert find_hymenoptera(download=False) == cache_copy
    monkeypatch.setenv("TL_DATA", str(fake_hymenoptera))
    assert find_hymenoptera(download=False) == fake_hymenoptera
    other = shutil.copytree(fake_hymenoptera, tmp_path / "mine" / "hymenoptera_data")
    assert find_hymenoptera(tmp_path / "mine", download=False) == other


def test_xdg_cache_home_is_used_without_tl_cache(fake_hymenoptera, tmp_path, monkeypatch):
    monkeypatch.delenv("TL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    copy = shutil.copytree(fake_hymenoptera, tmp_path / "xdg" / "tlhelpers" / "hymenoptera_data")
    assert find_hymenoptera(download=False) == copy


def test_wrong_count_names_the_class_folder(tmp_path):
    counts = {"train": {"ants": 123, "bees": 120}, "val": {"ants": 70, "bees": 83}}
    folder = _make_hymenoptera(tmp_path, counts)
    with _raises_naming(folder / "train" / "bees") as caught:
        find_hymenoptera(tmp_path, download=False)
    assert "has 120 images, expected 121" in str(caught.value)


def test_missing_split_is_reported(fake_hymenoptera, tmp_path):
    copy = shutil.copytree(fake_hymenoptera, tmp_path / "hymenoptera_data")
    shutil.rmtree(copy / "val")
    with _raises_naming(copy / "val"):
        find_hymenoptera(tmp_path, download=False)


def test_missing_without_download_says_where_to_look(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_DATA", str(tmp_path / "shared"))
    with pytest.raises(DataNotFoundError) as caught:
        find_hymenoptera(tmp_path / "mine", download=False)
    message = str(caught.value)
    for place in ("mine", "shared", "cache"):
        assert str(tmp_path / place / "hymenoptera_data") in message
    assert "TL_DATA" in message


def test_offline_without_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_network_available", lambda *args, **kwargs: False)
    with pytest.raises(DataNotFoundError, match="no network") as caught:
        find_hymenoptera()
    assert "TL_DATA" in str(caught.value)
    assert str(tmp_path / "cache" / "hymenoptera_data") in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)


def test_download_verifies_then_renames_into_place(fake_archive, tmp_path, monkeypatch, capsys):
    def fake_download(url, root, filename=None, **kwargs):
        assert url == data.HYMENOPTERA_URL
        shutil.copy(fake_archive, Path(root) / filename)

    monkeypatch.setattr(data, "_network_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(data, "download_url", fake_download)
    folder = find_hymenoptera()
    assert folder == tmp_path / "cache" / "hymenoptera_data"
    assert sorted(path.name for path in folder.parent.iterdir()) == ["hymenoptera_data"]
    assert "Downloading" in capsys.readouterr().out
    splits = load_hymenoptera()
    assert (len(splits.train), len(splits.val)) == (244, 153)


def _assert_nothing_usable_left(cache: Path):
    assert not (cache / "hymenoptera_data").exists()
    assert [path.name for path in cache.iterdir()] == []
    with pytest.raises(DataNotFoundError):
        find_hymenoptera(download=False)


def test_interrupted_download_leaves_nothing_usable(tmp_path, monkeypatch):
    def broken_download(url, root, filename=None, **kwargs):
        (Path(root) / filename).write_bytes(b"PK\x03\x04 half an archive")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(data, "_network_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(data, "download_url", broken_download)
    with pytest.raises(DataNotFoundError, match="connection reset"):
        find_hymenoptera()
    _assert_nothing_usable_left(tmp_path / "cache")


def test_interrupted_extraction_leaves_nothing_usable(fake_archive, tmp_path, monkeypatch):
    def fake_download(url, root, filename=None, **kwargs):
        shutil.copy(fake_archive, Path(root) / filename)

    def broken_extract(archive, destination):
        partial = Path(destination) / "hymenoptera_data" / "train" / "ants"
        partial.mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(partial / "0.jpg")
        raise OSError("No space left on device")

    monkeypatch.setattr(data, "_network_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(data, "download_url", fake_download)
    monkeypatch.setattr(data, "extract_archive", broken_extract)
    with pytest.raises(DataNotFoundError, match="No space left"):
        find_hymenoptera()
    _assert_nothing_usable_left(tmp_path / "cache")


def test_damaged_archive_is_not_moved_into_place(tmp_path, monkeypatch):
    small = _make_hymenoptera(
        tmp_path / "small", {"train": {"ants": 2, "bees": 2}, "val": {"ants": 2, "bees": 2}}
    )
    archive = shutil.make_archive(str(tmp_path / "small_archive"), "zip", small.parent, "hymenoptera_data")

    monkeypatch.setattr(data, "_network_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(
        data,
        "download_url",
        lambda url, root, filename=None, **kw: shutil.copy(archive, Path(root) / filename),
    )
    with pytest.raises(DataNotFoundError, match="expected 123"):
        find_hymenoptera()
    _assert_nothing_usable_left(tmp_path / "cache")


def test_network_probe_gives_up_on_a_hanging_lookup(monkeypatch):
    def hanging_connection(address, timeout=None):
        time.sleep(1.5)
        raise OSError("answered too late")

    monkeypatch.setattr(data.socket, "create_connection", hanging_connection)
    start = time.monotonic()
    assert REAL_PROBE("example.invalid", timeout=0.2) is False
    assert time.monotonic() - start < 1


def test_network_probe_reports_an_open_connection(monkeypatch):
    monkeypatch.setattr(
        data.socket, "create_connection", lambda address, timeout=None: contextlib.nullcontext()
    )
    assert REAL_PROBE("example.invalid", timeout=0.5) is True


# ---------------------------------------------------------------- load_hymenoptera, transforms, loaders


def test_load_hymenoptera_on_fake_data_leaves_placeholder_out(fake_hymenoptera, capsys):
    splits = load_hymenoptera(fake_hymenoptera.parent, download=False)
    assert splits.classes == ["ants", "bees"]
    assert splits.root == fake_hymenoptera
    assert (len(splits.train), len(splits.val)) == (244, 153)
    assert [path.name for path in splits.train.excluded] == [PLACEHOLDER]
    assert PLACEHOLDER in capsys.readouterr().out


def _fake_backbone(size=16):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    eval_tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    return SimpleNamespace(transforms=eval_tf, mean=mean, std=std, input_size=size)


def test_eval_transforms_are_the_backbones_own():
    backbone = _fake_backbone()
    assert eval_transforms(backbone) is backbone.transforms


def test_train_transforms_crop_flip_and_normalize():
    backbone = _fake_backbone(size=16)
    pipeline = train_transforms(backbone)
    kinds = [type(step) for step in pipeline.transforms]
    assert kinds == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert pipeline.transforms[0].size == (16, 16)
    normalize = pipeline.transforms[-1]
    assert tuple(normalize.mean) == backbone.mean and tuple(normalize.std) == backbone.std
    tensor = pipeline(Image.new("RGB", (40, 30), (255, 255, 255)))
    assert tensor.shape == (3, 16, 16)
    expected_white = (1 - torch.tensor(backbone.mean)) / torch.tensor(backbone.std)
    assert torch.allclose(tensor[:, 8, 8], expected_white, atol=1e-5)


def test_transforms_name_the_missing_attribute():
    with pytest.raises(TypeError, match="input_size"):
        train_transforms(SimpleNamespace(transforms=None, mean=(0, 0, 0), std=(1, 1, 1)))
    with pytest.raises(TypeError, match="transforms"):
        eval_transforms(object())


def _tiny_splits(root: Path, backbone) -> data.Splits:
    train = image_folder(root, transform=train_transforms(backbone))
    val = image_folder(root, transform=eval_transforms(backbone))
    return data.Splits(train=train, val=val, classes=train.classes, root=root)


def test_make_loaders_shuffle_is_seeded(tiny_image_folder):
    splits = _tiny_splits(tiny_image_folder, _fake_backbone(size=8))

    def train_order(seed):
        train_loader, _ = make_loaders(splits, batch_size=7, seed=seed)
        return [next(iter(train_loader))[1].tolist() for _ in range(3)]

    assert train_order(0) == train_order(0)
    assert train_order(0) != train_order(1)
    _, val_loader = make_loaders(splits, batch_size=4)
    images, targets = next(iter(val_loader))
    assert images.shape == (4, 3, 8, 8)
    assert [t for batch in val_loader for t in batch[1].tolist()] == splits.val.targets


def test_make_loaders_refuses_untransformed_datasets(tiny_image_folder):
    dataset = image_folder(tiny_image_folder)
    splits = data.Splits(train=dataset, val=dataset, classes=dataset.classes, root=tiny_image_folder)
    with pytest.raises(ValueError, match="train_transforms"):
        make_loaders(splits)


# ---------------------------------------------------------------- the real shared data


@pytest.mark.skipif(REAL_DATA is None, reason="no real data: set TL_DATA or provide ../shared/data")
def test_real_hymenoptera_counts_classes_and_placeholder(capsys):
    folder = find_hymenoptera(REAL_DATA, download=False)
    assert folder.name == "hymenoptera_data"
    splits = load_hymenoptera(
        folder, eval_transform=T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    )
    assert splits.classes == ["ants", "bees"]
    assert splits.train.report.counts == {"ants": 123, "bees": 121}
    assert splits.val.report.counts == {"ants": 70, "bees": 83}
    assert [path.name for path in splits.train.excluded] == [PLACEHOLDER]
    assert all(Path(path).name != PLACEHOLDER for path, _ in splits.train.samples)
    assert splits.val.excluded == []
    assert "imageNotFound.gif" in capsys.readouterr().out
    image, target = splits.val[0]
    assert image.shape == (3, 32, 32) and target == 0


# ---------------------------------------------------------------- a learner's own data: zips, splits, classes


def _write_classes(root: Path, counts: dict[str, int]) -> Path:
    for class_name, count in counts.items():
        for index in range(count):
            folder = root / class_name
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (20 * index, 100, 200)).save(folder / f"{class_name}{index}.jpg")
    return root


def _zip_folder(folder: Path, archive: Path, *, inside: str = "") -> Path:
    """Zip the contents of ``folder``, stored under ``inside/`` in the archive (as zipping a folder does)."""
    import zipfile

    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zipped.write(file, str(Path(inside) / file.relative_to(folder)))
    return archive


def test_val_folder_lacking_a_class_names_both_folders_and_the_class(tmp_path):
    train = _write_classes(tmp_path / "set" / "train", {"ants": 2, "bees": 2, "wasps": 2})
    val = _write_classes(tmp_path / "set" / "val", {"ants": 1, "bees": 1})
    with pytest.raises(DataError) as caught:
        check_same_classes(verify_image_folder(train), verify_image_folder(val))
    message = str(caught.value)
    assert str(train) in message and str(val) in message
    assert "has 3 classes" in message and "has 2 classes" in message
    assert "validation lacks ['wasps']" in message


def test_val_folder_with_an_extra_class_is_named(tmp_path):
    train = _write_classes(tmp_path / "set" / "train", {"ants": 2, "bees": 2})
    val = _write_classes(tmp_path / "set" / "val", {"ants": 1, "bees": 1, "Bees": 1})
    with pytest.raises(DataError, match=r"validation has \['Bees'\], which training lacks"):
        check_same_classes(train, val)
    assert check_same_classes(train, train) == ["ants", "bees"]


def test_load_hymenoptera_refuses_mismatched_splits(fake_hymenoptera, tmp_path):
    copy = tmp_path / "copy" / "hymenoptera_data"
    shutil.copytree(fake_hymenoptera, copy)
    _write_classes(copy / "val", {"wasps": 1})
    with pytest.raises(DataError, match="wasps"):
        load_hymenoptera(copy, download=False)


def test_zip_whose_top_folder_wraps_the_classes_works(tmp_path):
    source = _write_classes(tmp_path / "photos", {"cats": 3, "dogs": 3})
    archive = _zip_folder(source, tmp_path / "upload" / "photos.zip", inside="photos")
    train, val = find_image_data(archive)
    assert train == tmp_path / "upload" / "photos" / "photos" and val is None
    assert verify_image_folder(train).counts == {"cats": 3, "dogs": 3}
    assert find_image_data(archive) == (train, None), "a second call reuses the unpacked folder"
    assert [entry.name for entry in archive.parent.iterdir() if entry.name.startswith(".")] == []


def test_zip_of_the_class_folders_themselves_works(tmp_path):
    source = _write_classes(tmp_path / "photos", {"cats": 2, "dogs": 2})
    archive = _zip_folder(source, tmp_path / "flat.zip")
    train, val = find_image_data(archive)
    assert train == tmp_path / "flat" and val is None
    assert verify_image_folder(train).classes == ["cats", "dogs"]


def test_zip_with_nested_train_and_val(tmp_path):
    _write_classes(tmp_path / "src" / "train", {"cats": 3, "dogs": 3})
    _write_classes(tmp_path / "src" / "val", {"cats": 1, "dogs": 1})
    archive = _zip_folder(tmp_path / "src", tmp_path / "pets.zip", inside="pets")
    train, val = find_image_data(archive)
    assert (train, val) == (tmp_path / "pets" / "pets" / "train", tmp_path / "pets" / "pets" / "val")
    assert check_same_classes(train, val) == ["cats", "dogs"]


def test_zip_of_loose_images_says_it_has_no_class_folders(tmp_path):
    source = tmp_path / "loose"
    source.mkdir()
    for index in range(4):
        Image.new("RGB", (8, 8)).save(source / f"img{index}.jpg")
    archive = _zip_folder(source, tmp_path / "loose.zip", inside="loose")
    with _raises_naming(archive) as caught:
        find_image_data(archive)
    assert "holds no folders, only files (img0.jpg, img1.jpg, img2.jpg, ...)" in str(caught.value)
    assert "one folder of images per class" in str(caught.value)


def test_empty_zip(tmp_path):
    (tmp_path / "nothing").mkdir()
    archive = _zip_folder(tmp_path / "nothing", tmp_path / "nothing.zip")
    with pytest.raises(DataError, match=re.escape(f"{archive} is empty")):
        unpack_zip(archive)


def test_file_that_is_not_a_zip(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("<!DOCTYPE html><html>Sign in to continue</html>")
    with _raises_naming(fake) as caught:
        find_image_data(fake)
    assert "is not a zip archive" in str(caught.value) and "<!DOCTYPE" in str(caught.value)
    assert not (tmp_path / "photos").exists()


def test_other_file_is_neither_folder_nor_zip(tmp_path, make_image):
    image = make_image(tmp_path / "one.jpg")
    with _raises_naming(image, DataError) as caught:
        find_image_data(image)
    assert "not a folder of images or a .zip" in str(caught.value)


def test_missing_location(tmp_path):
    with _raises_naming(tmp_path / "nowhere.zip"):
        find_image_data(tmp_path / "nowhere.zip")


def test_changed_zip_is_unpacked_again(tmp_path, capsys):
    _write_classes(tmp_path / "v1", {"cats": 2, "dogs": 2})
    archive = _zip_folder(tmp_path / "v1", tmp_path / "pets.zip")
    assert verify_image_folder(find_image_data(archive)[0]).classes == ["cats", "dogs"]
    _write_classes(tmp_path / "v2", {"cats": 2, "dogs": 2, "fish": 2})
    archive.unlink()
    _zip_folder(tmp_path / "v2", archive)
    os.utime(archive, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert verify_image_folder(find_image_data(archive)[0]).classes == ["cats", "dogs", "fish"]
    assert "changed since it was unpacked" in capsys.readouterr().out


def test_val_without_train_is_explained(tmp_path):
    _write_classes(tmp_path / "set" / "val", {"cats": 1, "dogs": 1})
    _write_classes(tmp_path / "set" / "cats", {"x": 1})
    with _raises_naming(tmp_path / "set") as caught:
        find_split(tmp_path / "set")
    assert "val/ folder but no train/ folder" in str(caught.value)


def test_split_folders_mixed_with_class_folders(tmp_path):
    _write_classes(tmp_path / "set" / "train", {"cats": 1, "dogs": 1})
    _write_classes(tmp_path / "set", {"birds": 1})
    with pytest.raises(DataError, match=r"mixes split folders \(train/\) with other folders \(birds\)"):
        find_split(tmp_path / "set")


def test_train_and_test_folders_use_train_and_say_test_is_unused(tmp_path, capsys):
    _write_classes(tmp_path / "set" / "Train", {"cats": 1, "dogs": 1})
    _write_classes(tmp_path / "set" / "test", {"cats": 1, "dogs": 1})
    assert find_split(tmp_path / "set") == (tmp_path / "set" / "Train", None)
    assert "test is not used" in capsys.readouterr().out
