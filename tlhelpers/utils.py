"""Small shared utilities: seeding, device choice, environment detection."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so demos repeat exactly.

    Defined in 01_imagenet_features; used by every notebook, test and benchmark.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# Seconds to run every cell of each solution notebook, top to bottom, on a CPU without a GPU: measured by
# `python -m benchmarks --only course` (benchmarks/results/results.json, section "course", 2026-11-23) on a
# 2-core Intel Xeon with torch 2.14 and the efficientnet_lite0 backbone, rounded up to 5 s. The notebooks
# ran in course order sharing one feature cache, as for a learner working through the course.
# tests/test_utils.py checks these numbers against the committed results.
CPU_SECONDS = {
    "01_imagenet_features": 30,
    "02_freezing": 15,
    "03_replacing_the_head": 10,
    "04_training_the_head": 20,
    "05_fine_tuning": 35,
    "06_capstone": 15,
}


def device_report(device: torch.device | str, notebook: str | None = None) -> str:
    """What running on ``device`` means for the learner, in one or two sentences.

    On a CPU it gives the measured time of ``notebook`` (a key of ``CPU_SECONDS``, e.g. "05_fine_tuning")
    or, without one, the range over the course. Defined in 01_imagenet_features.
    """
    if notebook is not None and notebook not in CPU_SECONDS:
        raise ValueError(f"unknown notebook {notebook!r}; known ones: {', '.join(CPU_SECONDS)}")
    device = torch.device(device)
    if device.type == "cuda":
        return f"Using GPU: {torch.cuda.get_device_name(device)}."
    if device.type != "cpu":
        return f"Using {device.type}."
    measured = "measured on a 2-core CPU, running the notebooks in order, so cached features are reused"
    if notebook is not None:
        timing = f"running all of {notebook} takes about {CPU_SECONDS[notebook]} s ({measured})"
    else:
        timing = (
            f"running all cells of one notebook takes {min(CPU_SECONDS.values())} to "
            f"{max(CPU_SECONDS.values())} s ({measured})"
        )
    return (
        "No GPU found: running on the CPU, which this course is designed for (cached features, few "
        f"epochs): {timing}. A first run also downloads weights and images and computes the features it "
        "caches, which can add a couple of minutes."
    )


def pick_device(verbose: bool = False, notebook: str | None = None) -> torch.device:
    """CUDA when present, else CPU. With ``verbose``, say which and, on a CPU, how long ``notebook``
    (e.g. "05_fine_tuning") takes there (see ``device_report``).

    Defined in 01_imagenet_features.
    """
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if verbose:
        print(device_report(device, notebook))
    return device


def is_autograding() -> bool:
    """True while nbgrader executes the notebook (it sets NBGRADER_EXECUTION).

    Heavy demo cells check this and skip training under autograding.
    Defined in 04_training_the_head.
    """
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


_reference_calls: list[str] = []
_guarded: set[str] = set()


def reference_implementation(fn):
    """Mark a function as the reference solution of the exercise of the same name.

    While a check runs a learner's function, calls to the reference of the
    exercise being checked are recorded, so that a learner who just calls
    ``tlhelpers.<name>`` earns nothing (see ``tlhelpers.checks``).
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if fn.__name__ in _guarded:
            _reference_calls.append(fn.__name__)
        return fn(*args, **kwargs)

    wrapper.is_reference_implementation = True
    return wrapper
