"""Data: finding (or downloading) the ants-vs-bees images, verifying image folders, transforms, loaders.

Every image is checked with PIL before a dataset is built, so a broken file stops the notebook
with a message naming it, in the main process, instead of crashing a DataLoader worker mid-epoch.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import download_url, extract_archive

from .utils import reference_implementation

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
HYMENOPTERA_FOLDER = "hymenoptera_data"
DATA_ENV_VAR = "TL_DATA"
CACHE_ENV_VAR = "TL_CACHE"

# Usable images per split and class, placeholders excluded. No checksum of the public archive
# is published, so the download is checked against these counts (and every image is opened).
HYMENOPTERA_COUNTS = {
    "train": {"ants": 123, "bees": 121},
    "val": {"ants": 70, "bees": 83},
}

# Files skipped wherever they appear, with the reason. The public archive ships
# train/ants/imageNotFound.gif: a 300x300 "image not found" placeholder, not an ant.
# Training on it would teach the model that this placeholder picture is an ant.
EXCLUDED_FILES = {
    "imageNotFound.gif": "an 'image not found' placeholder picture, not a photo of the class",
}

# torchvision's ImageFolder extensions plus GIF, which PIL reads, so that a learner's GIFs are used
# rather than silently ignored.
IMAGE_EXTENSIONS = tuple(IMG_EXTENSIONS) + (".gif",)

# Split names that show up as "classes" when a dataset root is passed instead of one split.
_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}

_LFS_POINTER_PREFIX = b"version https://git-lfs"
_PROBE_HOST = "download.pytorch.org"
_PROBE_TIMEOUT_S = 3.0
_DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


class DataError(ValueError):
    """An image folder that cannot be used as it is; the message names the file or folder."""


class DataNotFoundError(FileNotFoundError):
    """The ants-vs-bees data is not on disk and could not be downloaded."""


@dataclass
class FolderReport:
    """What ``verify_image_folder`` found: classes, images per class, files it left out."""

    root: Path
    classes: list[str]
    counts: dict[str, int]
    excluded: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        per_class = ", ".join(f"{name}: {n}" for name, n in self.counts.items())
        return f"{self.root}: {self.num_images} images in {len(self.classes)} classes ({per_class})"


class Splits(NamedTuple):
    """The train and val datasets of a split image set, their class names and the data folder."""

    train: ImageFolder
    val: ImageFolder
    classes: list[str]
    root: Path


# ---------------------------------------------------------------- verifying an image folder

# Images that passed verification: absolute path -> (mtime_ns, size) at the time.
_verified_images: dict[str, tuple[int, int]] = {}
_announced_exclusions: set[str] = set()


def _file_kind(filename: str) -> str:
    """'hidden', 'excluded', 'image' or 'ignored' (an extension PIL is not asked to read)."""
    if filename.startswith("."):
        return "hidden"
    if filename in EXCLUDED_FILES:
        return "excluded"
    if filename.lower().endswith(IMAGE_EXTENSIONS):
        return "image"
    return "ignored"


def _is_usable_image(path: str) -> bool:
    return _file_kind(os.path.basename(path)) == "image"


def _class_folders(root: Path) -> list[str]:
    # Hidden folders are skipped: Jupyter's .ipynb_checkpoints would otherwise become a class.
    return sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )


def _walk_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` in the order ImageFolder lists them."""
    files = []
    for directory, _, filenames in sorted(os.walk(folder, followlinks=True)):
        files.extend(Path(directory) / name for name in sorted(filenames))
    return files


def _check_image(path: Path) -> None:
    stat = path.stat()
    key = str(path.resolve())
    if _verified_images.get(key) == (stat.st_mtime_ns, stat.st_size):
        return
    if stat.st_size == 0:
        raise DataError(f"{path} is an empty file (0 bytes), not an image. Delete it or replace it.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        raise DataError(
            f"{path} cannot be read ({error.strerror or error}). Check its permissions, or delete it."
        ) from error
    if head.startswith(_LFS_POINTER_PREFIX):
        raise DataError(
            f"{path} is a Git LFS pointer (a small text file), not the image itself. "
            "Run `git lfs pull` in the repository to fetch the real files."
        )
    try:
        with Image.open(path) as image:
            image.verify()
        # verify() does not decode pixels; a full load catches truncated files.
        with Image.open(path) as image:
            image.load()
    except Exception as error:
        if _looks_like_text(head):
            raise DataError(
                f"{path} is a text file with an image extension, not an image "
                f"(it starts with {head[:40]!r}). Replace it with the real image or delete it."
            ) from error
        raise DataError(
            f"{path} is corrupt or truncated and cannot be read as an image ({error}). "
            "Delete it or replace it with a good copy."
        ) from error
    _verified_images[key] = (stat.st_mtime_ns, stat.st_size)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char.isspace() for char in text)


def verify_image_folder(path, *, min_images_per_class: int = 1) -> FolderReport:
    """Check an ImageFolder-style directory (one subfolder of images per class) before training.

    Opens every image with PIL (verify and full load), so a corrupt, truncated or fake image
    (for example a Git LFS pointer) is reported here, naming the file, rather than inside a
    DataLoader worker. Results are cached per file (path, mtime, size): a second call only
    lists the folder. Files named in ``EXCLUDED_FILES`` are left out and listed in the report.
    Raises ``DataError``. Used in 04_training_the_head and 06_capstone.
    """
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DataError(f"Image folder {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of class subfolders.")
    layout = f"expected layout: {root}/<class name>/<image>.jpg, one subfolder per class"
    classes = _class_folders(root)
    if not classes:
        loose = [
            entry.name for entry in os.scandir(root) if entry.is_file() and _file_kind(entry.name) == "image"
        ]
        if loose:
            examples = ", ".join(sorted(loose)[:3]) + (", ..." if len(loose) > 3 else "")
            found = (
                f"it holds {len(loose)} images directly ({examples}); move them into one subfolder per class"
            )
        else:
            found = "it holds no subfolders at all"
        raise DataError(f"{root} has no class subfolders: {found} ({layout}).")
    split_like = sorted(set(classes) & _SPLIT_NAMES)
    if split_like:
        raise DataError(
            f"{root} has subfolders named {split_like}, which look like dataset splits, not classes. "
            f"Pass one split instead, e.g. {root / split_like[0]}."
        )
    if len(classes) < 2:
        raise DataError(
            f"{root} has a single class folder ({classes[0]!r}); a classifier needs at least 2 classes: "
            f"add a subfolder of images for each other class ({layout})."
        )

    counts: dict[str, int] = {}
    excluded: list[Path] = []
    ignored: list[Path] = []
    for class_name in classes:
        images = []
        for file in _walk_files(root / class_name):
            kind = _file_kind(file.name)
            if kind == "image":
                images.append(file)
            elif kind == "excluded":
                excluded.append(file)
            elif kind == "ignored":
                ignored.append(file)
        if len(images) < min_images_per_class:
            found = "no images" if not images else f"only {len(images)} images"
            raise DataError(
                f"Class folder {root / class_name} has {found} (need at least {min_images_per_class}): add "
                "images of that class, or remove the folder to leave the class out. Image extensions read: "
                f"{', '.join(IMAGE_EXTENSIONS)}."
            )
        for image in images:
            _check_image(image)
        counts[class_name] = len(images)
    return FolderReport(root=root, classes=classes, counts=counts, excluded=excluded, ignored=ignored)


class VerifiedImageFolder(ImageFolder):
    """An ImageFolder whose images were all checked first and which leaves out ``EXCLUDED_FILES``.

    ``.report`` is the ``FolderReport``; ``.excluded`` lists the files deliberately left out.
    """

    def __init__(self, root, transform=None, *, min_images_per_class: int = 1):
        self.report = verify_image_folder(root, min_images_per_class=min_images_per_class)
        self.excluded = self.report.excluded
        super().__init__(self.report.root, transform=transform, is_valid_file=_is_usable_image)

    def find_classes(self, directory):
        classes = _class_folders(Path(directory))
        return classes, {name: index for index, name in enumerate(classes)}


def image_folder(path, transform=None) -> VerifiedImageFolder:
    """A verified ImageFolder over ``path`` (one subfolder per class), with ``.classes``, ``.targets``,
    ``.samples``, ``.report`` and ``.excluded``.

    Says once (on stdout) which files it left out and why. Used in 04_training_the_head and 06_capstone.
    """
    dataset = VerifiedImageFolder(path, transform=transform)
    _announce_left_out(dataset.report)
    return dataset


def _announce_left_out(report: FolderReport) -> None:
    for file in report.excluded:
        if str(file) not in _announced_exclusions:
            _announced_exclusions.add(str(file))
            shown = Path(report.root.name) / file.relative_to(report.root)
            print(f"Note: left out {shown}: {EXCLUDED_FILES[file.name]}.")
    new_ignored = [file for file in report.ignored if str(file) not in _announced_exclusions]
    if new_ignored:
        _announced_exclusions.update(str(file) for file in new_ignored)
        examples = ", ".join(str(file.relative_to(report.root)) for file in new_ignored[:3])
        print(
            f"Note: ignored {len(new_ignored)} file(s) in {report.root} without an image extension "
            f"({examples}{', ...' if len(new_ignored) > 3 else ''})."
        )


# ---------------------------------------------------------------- your own data: zips, splits, classes

_TRAIN_NAMES = ("train", "training")
_VAL_NAMES = ("val", "valid", "validation")
_UNPACKED_MARKER = ".tlhelpers-unpacked"
_ZIP_METADATA = {"__MACOSX"}


def _describe_source(archive: Path) -> str:
    stat = archive.stat()
    return f"{archive.name} {stat.st_size} {stat.st_mtime_ns}"


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(
        entry
        for entry in folder.iterdir()
        if not entry.name.startswith(".") and entry.name not in _ZIP_METADATA
    )


def _step_into_wrapper(folder: Path) -> Path:
    """Zipping a folder usually gives an archive holding that one folder: step into it (and into a folder
    wrapped the same way inside it) while it is the only entry and itself holds folders."""
    while True:
        entries = _visible_entries(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        inner = entries[0]
        if not any(entry.is_dir() for entry in _visible_entries(inner)):
            return folder
        folder = inner


def unpack_zip(archive, destination=None) -> Path:
    """Unpack a .zip of an image folder and return the folder that holds the class (or train/val) folders.

    The archive is unpacked once into ``destination`` (default: next to it, named like it without
    ``.zip``), through a temporary folder renamed at the end, so an interrupted run never leaves a
    half-unpacked folder. A zip that changed since is unpacked again. A single top folder wrapping the
    classes (what zipping a folder gives) is stepped into; macOS's ``__MACOSX`` folder is ignored.
    Raises ``DataError`` naming the archive when it is not a zip or holds no folders. Used in 06_capstone.
    """
    archive = Path(archive).expanduser().absolute()
    if not archive.is_file():
        raise DataError(f"There is no zip file at {archive}.")
    if not zipfile.is_zipfile(archive):
        with open(archive, "rb") as handle:
            head = handle.read(16)
        raise DataError(
            f"{archive} is not a zip archive (it starts with {head!r}). Make one by zipping the folder of "
            "class subfolders (right-click > Compress, or `zip -r photos.zip photos/`), or point at the "
            "unpacked folder instead."
        )
    target = Path(destination).expanduser().absolute() if destination else archive.with_suffix("")
    marker = target / _UNPACKED_MARKER
    source = _describe_source(archive)
    if target.is_dir() and marker.is_file() and marker.read_text() != source:
        print(f"{archive.name} changed since it was unpacked: unpacking it again into {target}")
        shutil.rmtree(target)
    elif target.is_dir() and not marker.is_file():
        print(
            f"Using the existing folder {target} next to {archive.name} (delete it to unpack the zip again)."
        )
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            try:
                with zipfile.ZipFile(archive) as opened:
                    opened.extractall(staging)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise DataError(
                    f"{archive} is damaged and cannot be unpacked ({error}). Make the zip again."
                ) from error
            (staging / _UNPACKED_MARKER).write_text(source)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    folder = _step_into_wrapper(target)
    entries = _visible_entries(folder)
    if not entries:
        raise DataError(f"{archive} is empty: zip the folder that holds one subfolder of images per class.")
    if not any(entry.is_dir() for entry in entries):
        examples = ", ".join(entry.name for entry in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise DataError(
            f"{archive} holds no folders, only files ({examples}): a classifier needs one folder of images "
            "per class. Sort the images into class subfolders and zip the folder that holds them."
        )
    return folder


def find_split(folder) -> tuple[Path, Path | None]:
    """``(training folder, validation folder or None)`` for an image folder that may hold ``train/`` and
    ``val/`` (also ``training/``, ``valid/``, ``validation/``; any case). Without them, the folder itself
    is the training folder and there is no validation folder. Raises ``DataError`` for a ``val/`` without
    a ``train/``, or split folders mixed with class folders. Used in 06_capstone.
    """
    folder = Path(folder)
    subfolders = {entry.name.lower(): entry for entry in _visible_entries(folder) if entry.is_dir()}
    train = next((subfolders[name] for name in _TRAIN_NAMES if name in subfolders), None)
    val = next((subfolders[name] for name in _VAL_NAMES if name in subfolders), None)
    if train is None and val is None:
        return folder, None
    if train is None:
        raise DataError(
            f"{folder} has a {val.name}/ folder but no train/ folder: put the training images, one subfolder "
            f"per class, in {folder / 'train'}."
        )
    others = sorted(entry.name for name, entry in subfolders.items() if name not in _TRAIN_NAMES + _VAL_NAMES)
    unused = [name for name in others if name.lower() in ("test", "testing")]
    for name in unused:
        print(f"Note: {folder / name} is not used: only {train.name}/ and the validation images are.")
    others = [name for name in others if name not in unused]
    if others:
        splits = f"{train.name}/" + (f", {val.name}/" if val else "")
        raise DataError(
            f"{folder} mixes split folders ({splits}) with other folders ({', '.join(others)}): put every "
            f"class folder inside {train.name}/ (and the validation ones in val/), or remove the split "
            "folders."
        )
    return train, val


def find_image_data(location) -> tuple[Path, Path | None]:
    """``(training folder, validation folder or None)`` for a learner's data: a folder of class folders,
    a folder holding ``train/`` and ``val/``, or a .zip of either (unpacked next to it with ``unpack_zip``).

    Raises ``DataError`` naming the path when there is nothing there or it is neither. Used in 06_capstone.
    """
    path = Path(location).expanduser().absolute()
    if not path.exists():
        raise DataError(f"There is no file or folder at {path} (from {str(location)!r}).")
    if path.is_file():
        if path.suffix.lower() != ".zip" and not zipfile.is_zipfile(path):
            raise DataError(
                f"{path} is a file, not a folder of images or a .zip of one: point at the folder that holds "
                "one subfolder per class, or at a zip of it."
            )
        path = unpack_zip(path)
    return find_split(path)


def _classes_and_root(split) -> tuple[list[str], str]:
    if isinstance(split, (str, os.PathLike)):
        return _class_folders(Path(split)), str(split)
    return list(split.classes), str(getattr(split, "root", "?"))


def check_same_classes(train, val) -> list[str]:
    """Make sure a training and a validation set have the same classes; return the class names.

    ``train`` and ``val`` are folders, ``FolderReport`` objects or image folders. Raises ``DataError``
    naming both folders and the classes that only one of them has. Used in 06_capstone (and by
    ``load_hymenoptera``).
    """
    train_classes, train_root = _classes_and_root(train)
    val_classes, val_root = _classes_and_root(val)
    if train_classes == val_classes:
        return train_classes
    only_train = [name for name in train_classes if name not in val_classes]
    only_val = [name for name in val_classes if name not in train_classes]
    differences = []
    if only_train:
        differences.append(f"validation lacks {only_train}")
    if only_val:
        differences.append(f"validation has {only_val}, which training lacks")
    raise DataError(
        f"The training folder {train_root} has {len(train_classes)} classes {train_classes}, the validation "
        f"folder {val_root} has {len(val_classes)} classes {val_classes} ({'; '.join(differences)}). Both "
        "need the same class folders, spelled the same: add the missing ones, or rename or remove the others."
    )


# ---------------------------------------------------------------- finding the ants-vs-bees data


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return _absolute(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return _absolute(base) / "tlhelpers"


def _absolute(path) -> Path:
    return Path(path).expanduser().absolute()


def _data_folder_for(location: Path) -> Path:
    """Where the hymenoptera folder is, or would go, for a location given as parent or folder itself."""
    if location.name == HYMENOPTERA_FOLDER or (location / "train").is_dir() or (location / "val").is_dir():
        return location
    return location / HYMENOPTERA_FOLDER


def _check_hymenoptera_counts(folder: Path, advice: str | None = None) -> None:
    """Cheap check by listing: both splits, both classes, the expected number of images in each."""
    advice = advice or (
        f"Delete {folder} and run again to download a fresh copy, "
        f"or set {DATA_ENV_VAR} to a complete copy of {HYMENOPTERA_FOLDER}."
    )
    for split, expected_counts in HYMENOPTERA_COUNTS.items():
        split_folder = folder / split
        if not split_folder.is_dir():
            raise DataError(f"Incomplete ants-vs-bees data: {split_folder} is missing. {advice}")
        classes = _class_folders(split_folder)
        if set(classes) != set(expected_counts):
            raise DataError(
                f"{split_folder} has class folders {classes}, expected {sorted(expected_counts)}. {advice}"
            )
        for class_name, expected in expected_counts.items():
            class_folder = split_folder / class_name
            found = sum(_file_kind(file.name) == "image" for file in _walk_files(class_folder))
            if found != expected:
                raise DataError(
                    f"{class_folder} has {found} images, expected {expected} "
                    f"(placeholders such as imageNotFound.gif not counted). {advice}"
                )


def _network_available(host: str = _PROBE_HOST, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` seconds, DNS lookup included."""
    result = []

    def probe():
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            pass

    # A thread bounds the DNS lookup too, which socket timeouts do not cover.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # torchvision's download opens URLs without a timeout; a stalled server must not hang a notebook.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_hymenoptera(destination: Path) -> Path:
    """Download and unpack the archive beside ``destination``, verify it, then rename it into place.

    Everything happens in a hidden temporary sibling folder, so an interrupted run leaves nothing that
    looks like the data set.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading the ants-vs-bees images (about 45 MB) from {HYMENOPTERA_URL} into {destination} ...")
    staging = Path(tempfile.mkdtemp(prefix=f".{HYMENOPTERA_FOLDER}.partial-", dir=destination.parent))
    try:
        archive = staging / "hymenoptera_data.zip"
        with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S):
            download_url(HYMENOPTERA_URL, str(staging), filename=archive.name)
        extract_archive(str(archive), str(staging / "unpacked"))
        unpacked = staging / "unpacked" / HYMENOPTERA_FOLDER
        if not unpacked.is_dir():
            raise DataError(f"The downloaded archive {HYMENOPTERA_URL} has no {HYMENOPTERA_FOLDER}/ folder.")
        _check_hymenoptera_counts(unpacked, advice="The download looks damaged; run again.")
        for split in HYMENOPTERA_COUNTS:
            verify_image_folder(unpacked / split)
        try:
            os.rename(unpacked, destination)
        except OSError:
            # Another process may have finished the same download first.
            if not destination.is_dir():
                raise
            _check_hymenoptera_counts(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def find_hymenoptera(root=None, download: bool = True) -> Path:
    """Return the ``hymenoptera_data`` folder (the one holding ``train/`` and ``val/``).

    Looks in ``root``, then ``$TL_DATA``, then the per-user cache (``$TL_CACHE``, else
    ``$XDG_CACHE_HOME/tlhelpers`` or ``~/.cache/tlhelpers``). ``root`` and ``$TL_DATA`` may name the
    parent folder or ``hymenoptera_data`` itself; relative paths are taken from the current folder.
    If nothing is found and ``download`` is true and the network answers, downloads the public
    archive into the first of those places. Raises ``DataNotFoundError`` when offline without data,
    ``DataError`` when a copy is incomplete. Defined in 04_training_the_head.
    """
    locations = []
    if root is not None:
        locations.append(_absolute(root))
    if os.environ.get(DATA_ENV_VAR):
        locations.append(_absolute(os.environ[DATA_ENV_VAR]))
    locations.append(_cache_dir())

    candidates = [_data_folder_for(location) for location in locations]
    for candidate in candidates:
        if candidate.is_dir():
            _check_hymenoptera_counts(candidate)
            return candidate

    looked_in = "\n".join(f"  - {candidate}" for candidate in candidates)
    where_to_put = (
        f"Put the {HYMENOPTERA_FOLDER} folder (holding train/ and val/) in one of those places, "
        f"or set the environment variable {DATA_ENV_VAR} to it or to its parent folder "
        f"(archive: {HYMENOPTERA_URL})."
    )
    if not download:
        raise DataNotFoundError(f"Ants-vs-bees data not found. Looked in:\n{looked_in}\n{where_to_put}")
    if not _network_available():
        raise DataNotFoundError(
            "Ants-vs-bees data not found and no network to download it. "
            f"Looked in:\n{looked_in}\n{where_to_put}"
        )
    try:
        return _download_hymenoptera(candidates[0])
    except Exception as error:
        raise DataNotFoundError(
            f"Ants-vs-bees data not found and the download into {candidates[0]} failed ({error}). "
            f"Looked in:\n{looked_in}\n{where_to_put}"
        ) from error


def load_hymenoptera(
    root=None, *, train_transform=None, eval_transform=None, download: bool = True
) -> Splits:
    """The ants-vs-bees train and val sets as verified ImageFolders (placeholder GIF left out).

    Without transforms the datasets return PIL images (handy for looking at them); pass
    ``train_transforms(backbone)`` and ``eval_transforms(backbone)`` before making loaders.
    Defined in 04_training_the_head.
    """
    folder = find_hymenoptera(root, download=download)
    train = image_folder(folder / "train", transform=train_transform)
    val = image_folder(folder / "val", transform=eval_transform)
    check_same_classes(train.report, val.report)
    return Splits(train=train, val=val, classes=list(train.classes), root=folder)


# ---------------------------------------------------------------- transforms and loaders


def _backbone_attribute(backbone: Any, name: str):
    if not hasattr(backbone, name):
        raise TypeError(
            f"{type(backbone).__name__} has no attribute {name!r}; pass the Backbone returned by "
            "load_pretrained() (or any object with transforms, mean, std and input_size)."
        )
    return getattr(backbone, name)


def eval_transforms(backbone: Any):
    """The backbone's own evaluation preprocessing (resize, center crop, tensor, normalize).

    Defined in 04_training_the_head.
    """
    return _backbone_attribute(backbone, "transforms")


def train_transforms(backbone: Any) -> T.Compose:
    """Training augmentation for ``backbone``: random resized crop to its input size, random
    horizontal flip, then the same tensor conversion and normalization it was trained with.

    Defined in 04_training_the_head.
    """
    input_size = _backbone_attribute(backbone, "input_size")
    mean = _backbone_attribute(backbone, "mean")
    std = _backbone_attribute(backbone, "std")
    return T.Compose(
        [
            T.RandomResizedCrop(input_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def make_loaders(
    splits: Splits, batch_size: int = 32, num_workers: int = 0, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, val_loader)``: the train loader shuffles with a generator seeded by ``seed``,
    so the batch order repeats run after run; the val loader keeps the folder order.

    Defined in 04_training_the_head.
    """
    for split_name in ("train", "val"):
        dataset = getattr(splits, split_name)
        if getattr(dataset, "transform", "") is None:
            raise ValueError(
                f"splits.{split_name} has no transform, so it yields PIL images that cannot be batched. "
                "Load with load_hymenoptera(train_transform=train_transforms(backbone), "
                "eval_transform=eval_transforms(backbone))."
            )
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        splits.train, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator
    )
    val_loader = DataLoader(splits.val, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, val_loader


@reference_implementation
def split_indices(targets, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified, seeded split of ``range(len(targets))``: ``(train_indices, val_indices)``, both sorted.

    A class of n images sends ``round(val_fraction * n)`` of them to validation, at least 1 and at
    most n - 1; which ones is drawn from a local ``random.Random(seed)``.
    Reference solution in 06_capstone.
    """
    generator = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(index)
    train_indices, val_indices = [], []
    for indices in by_class.values():
        shuffled = indices[:]
        generator.shuffle(shuffled)
        held_out = min(max(1, round(val_fraction * len(indices))), len(indices) - 1)
        val_indices.extend(shuffled[:held_out])
        train_indices.extend(shuffled[held_out:])
    return sorted(train_indices), sorted(val_indices)
