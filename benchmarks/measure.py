"""Measuring tools shared by the benchmarks: machine description, wall time, peak memory, subprocesses."""

from __future__ import annotations

import ctypes
import datetime
import gc
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

MIB = 1024 * 1024
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, backbone_name: str | None = None) -> dict:
    """What a reader needs to compare these numbers with their own: CPU, cores, versions, device, date."""
    import torchvision

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if backbone_name is not None:
        info["backbone"] = backbone_name
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer stopped next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int | None:
    if not _STATUS.is_file():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _max_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _release_free_heap() -> None:
    """Hand memory freed by earlier work back to the OS (glibc keeps it otherwise), so that a block's
    RSS growth is not hidden by memory the allocator retained from the block before."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory of the code inside ``with PeakMemory(device) as memory:``; read ``memory.peak_bytes``.

    CUDA: ``torch.cuda.max_memory_allocated`` (absolute: weights, activations, optimizer state).
    CPU: peak resident set size during the block minus the RSS at its start. On Linux freed heap
    memory is returned to the OS and the process's high-water mark is reset at the start
    (``/proc/self/clear_refs``), so the peak is that of the block alone; elsewhere it is the growth
    of ``ru_maxrss``, a lower bound (0 when an earlier block of the same process went higher).
    ``method`` says which was used.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        _release_free_heap()
        if _reset_peak_rss() and _status_kib("VmRSS") is not None:
            self._start = _status_kib("VmRSS") * 1024
            self.method = (
                "peak RSS minus RSS at start (free heap trimmed and high-water mark reset via "
                "/proc/self/clear_refs first)"
            )
        else:
            self._start = _max_rss_bytes()
            self.method = "growth of ru_maxrss (lower bound)"
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS"):
            self.peak_bytes = max(0, _status_kib("VmHWM") * 1024 - self._start)
        else:
            self.peak_bytes = max(0, _max_rss_bytes() - self._start)


class Stopwatch:
    """``with Stopwatch(device) as watch:`` then ``watch.seconds`` (GPU work included)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._started


@dataclass
class ProcessRun:
    """A finished command: exit code, wall seconds, peak memory and the end of its output."""

    returncode: int
    seconds: float
    peak_rss_bytes: int
    peak_tree_rss_bytes: int
    output_tail: str
    timed_out: bool = False


def _peak_rss_of(process) -> int:
    """The process's own high-water mark (VmHWM) where /proc has it, else its current RSS."""
    status = Path(f"/proc/{process.pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return process.memory_info().rss


def run_measured(
    command: list[str], *, cwd=None, env=None, timeout: float = 1800.0, poll_seconds: float = 0.2
) -> ProcessRun:
    """Run ``command`` to completion and measure it from outside, polling every ``poll_seconds``.

    ``peak_rss_bytes`` is the largest peak resident set of any single process in the command's
    tree (for nbval and nbgrader: the Jupyter kernel), read from each process's own high-water
    mark (Linux ``VmHWM``; elsewhere the RSS seen while polling). ``peak_tree_rss_bytes`` is the
    largest sum of the current RSS of the whole tree seen while polling. (The ``ru_maxrss`` of a
    waited-for child is no use here: on Linux it also counts this process's own RSS at fork time.)
    Past ``timeout`` seconds the command's process group is killed and ``timed_out`` is set.
    """
    import psutil  # a dependency of ipykernel, so present wherever notebooks run

    peaks: dict[int, int] = {}
    peak_tree = 0
    timed_out = False
    with tempfile.TemporaryFile(mode="w+b") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:  # the command ended just now
                tree = []
            current = 0
            for member in tree:
                try:
                    peaks[member.pid] = max(peaks.get(member.pid, 0), _peak_rss_of(member))
                    current += member.memory_info().rss
                except psutil.Error:  # it ended between listing and reading
                    continue
            peak_tree = max(peak_tree, current)
            if time.perf_counter() - started > timeout and not timed_out:
                timed_out = True
                os.killpg(process.pid, 9)
            time.sleep(poll_seconds)
        seconds = time.perf_counter() - started
        log.seek(0)
        # Keep the end of the output, without the terminal colour codes pytest and nbval add.
        tail = re.sub(r"\x1b\[[0-9;]*m", "", log.read().decode("utf-8", errors="replace"))[-3000:]
    return ProcessRun(
        returncode=process.returncode,
        seconds=seconds,
        peak_rss_bytes=max(peaks.values(), default=0),
        peak_tree_rss_bytes=peak_tree,
        output_tail=tail,
        timed_out=timed_out,
    )
