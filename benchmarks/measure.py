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

try:
    import psutil
except ImportError:  # optional: without it only the largest process is measured, not the tree
    psutil = None

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
    peak_tree_rss_bytes: int | None
    output_tail: str
    timed_out: bool = False


def _tree_rss(process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # it ended between listing and reading
            continue
    return total


def run_measured(
    command: list[str], *, cwd=None, env=None, timeout: float = 1800.0, poll_seconds: float = 0.2
) -> ProcessRun:
    """Run ``command`` to completion and measure it from outside.

    ``peak_rss_bytes`` is the ``ru_maxrss`` that ``wait4`` reports for the command: the largest
    resident set of the command or of any descendant it waited for (for nbval and nbgrader, the
    Jupyter kernel). ``peak_tree_rss_bytes`` is the largest sum of the RSS of the whole process tree
    seen while polling every ``poll_seconds`` (None without psutil). Past ``timeout`` seconds the
    command's process group is killed and ``timed_out`` is set.
    """
    with tempfile.TemporaryFile(mode="w+b") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        watched = psutil.Process(process.pid) if psutil is not None else None
        peak_tree = 0 if watched is not None else None
        timed_out = False
        while True:
            # wait4 rather than Popen.wait: it hands back the resource usage of the finished tree.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if watched is not None:
                peak_tree = max(peak_tree, _tree_rss(watched))
            if time.perf_counter() - started > timeout and not timed_out:
                timed_out = True
                os.killpg(process.pid, 9)
            time.sleep(poll_seconds)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        # Keep the end of the output, without the terminal colour codes pytest and nbval add.
        tail = re.sub(r"\x1b\[[0-9;]*m", "", log.read().decode("utf-8", errors="replace"))[-3000:]
    scale = 1 if sys.platform == "darwin" else 1024
    return ProcessRun(
        returncode=process.returncode,
        seconds=seconds,
        peak_rss_bytes=usage.ru_maxrss * scale,
        peak_tree_rss_bytes=peak_tree,
        output_tail=tail,
        timed_out=timed_out,
    )
