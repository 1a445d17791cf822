"""The ``tlcourse`` command: release the student notebooks, grade submissions, check the setup.

tlcourse release [--check]                 regenerate course/ from solutions/ (tools/release.py)
tlcourse grade SUBMISSIONS [--out DIR]     autograde a folder of notebooks; write grades.csv and feedback
tlcourse doctor                            torch, device, backbone, data, nbgrader and kernel
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from . import grading

REPO = grading.REPO


def load_repository_tool(name: str, repo: Path = REPO):
    """Import ``tools/<name>.py`` of the course repository (a script folder, not a package)."""
    path = repo / "tools" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"this needs the course repository: {path} is missing")
    spec = importlib.util.spec_from_file_location(f"tl_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release(args) -> int:
    """Regenerate (or with --check, compare) course/ from solutions/."""
    return load_repository_tool("release").main(["--check"] if args.check else [])


def grade(args) -> int:
    """Grade a folder of submissions into ``args.out``."""
    cores, jobs = os.cpu_count() or 1, max(1, args.jobs)
    processes = args.processes_per_student or max(1, cores // jobs)
    limits = grading.Limits(
        cell_timeout=args.cell_timeout,
        student_timeout=args.student_timeout,
        memory_gb=args.memory_gb,
        cpu_seconds=args.student_timeout,
        verify_timeout=args.cell_timeout,
        threads=args.threads or max(1, cores // (jobs * processes)),
        processes_per_student=processes,
    )
    try:
        results = grading.grade_folder(
            args.submissions,
            args.out,
            solutions_dir=args.solutions,
            assignment_names=args.assignment or None,
            jobs=jobs,
            limits=limits,
        )
    except grading.GradingError as error:
        print(f"tlcourse grade: {error}", file=sys.stderr)
        return 2
    flagged = sum(r.status != "graded" for r in results)
    print(f"Wrote {args.out / 'grades.csv'} ({len(results)} rows, {flagged} with notes)")
    print(f"Feedback for each student in {args.out / 'feedback'}")
    return 0


def _line(ok: bool | None, what: str, detail: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    print(f"[{mark}] {what}: {detail}")


def doctor(args) -> int:
    """Print what grading and the notebooks will use here; exit 1 if grading cannot work."""
    healthy = True
    _line(True, "python", f"{platform.python_version()} at {sys.executable}")
    try:
        import torch

        from .utils import pick_device

        device = pick_device()
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
        _line(
            True, "torch", f"{torch.__version__}, device {device} ({name}), {torch.get_num_threads()} threads"
        )
    except ImportError as error:
        _line(False, "torch", f"cannot be imported: {error}")
        return 1

    from . import models

    cached = models.resnet18_checkpoint_path()
    if cached.is_file():
        _line(True, "backbone auto", f"resnet18, its ImageNet weights are cached at {cached}")
    else:
        url = models._resnet18_weights().url
        if models._url_answers(url, timeout=args.timeout):
            _line(True, "backbone auto", f"resnet18, its weights are not cached but {url} answers (45 MB)")
        else:
            try:
                weights = models.efficientnet_lite0_weights_path()
                _line(True, "backbone auto", f"efficientnet_lite0 (offline), resnet18 weights not cached at "
                      f"{cached} and the download site does not answer; weights at {weights}")  # fmt: skip
            except ImportError as error:
                healthy = False
                _line(
                    False, "backbone auto", f"no resnet18 weights and no efficientnet_lite0 package: {error}"
                )

    from .data import find_hymenoptera

    try:
        _line(True, "data", f"hymenoptera_data found at {find_hymenoptera(download=False)}")
    except Exception as error:  # DataNotFoundError or DataError, both explain themselves
        _line(None, "data", f"{error}".replace("\n", " "))

    try:
        import nbgrader

        _line(True, "nbgrader", f"{nbgrader.__version__}, config {REPO / 'nbgrader_config.py'}")
    except ImportError as error:
        _line(False, "nbgrader", f"not installed ({error}); pip install -e '.[dev]'")
        return 1
    ok, detail = _kernel_works(args.timeout * 24)
    healthy &= ok
    _line(ok, "kernel", detail)
    return 0 if healthy else 1


def _kernel_works(timeout: float) -> tuple[bool, str]:
    """Start the kernel grading uses and import the course package in it."""
    from jupyter_client.manager import start_new_kernel

    with tempfile.TemporaryDirectory(prefix="tl-doctor-") as scratch:
        env = grading.grading_env(Path(scratch))
        saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_DIR")}
        os.environ.update({key: env[key] for key in saved})
        try:
            manager, client = start_new_kernel(
                kernel_name="python3", startup_timeout=timeout, stderr=subprocess.DEVNULL
            )
        except Exception as error:  # whatever stops a kernel from starting, report it
            return False, f"the python3 kernel does not start: {error}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            outputs = []
            reply = client.execute_interactive(
                "import tlhelpers, sys; print(sys.executable)",
                timeout=timeout,
                output_hook=lambda msg: outputs.append(msg["content"].get("text", "")),
            )
        except TimeoutError:
            return False, f"the kernel did not import tlhelpers within {timeout:.0f} s"
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    if reply["content"]["status"] != "ok":
        return False, f"importing tlhelpers in the kernel failed: {reply['content'].get('evalue')}"
    return True, f"python3 kernel starts and imports tlhelpers ({''.join(outputs).strip()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlcourse", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    release_parser = commands.add_parser("release", help="regenerate course/ from solutions/")
    release_parser.add_argument("--check", action="store_true", help="only check that course/ is up to date")
    release_parser.set_defaults(run=release)

    grade_parser = commands.add_parser(
        "grade",
        help="autograde submissions; write grades.csv and feedback",
        description=(
            "Notebooks may be laid out as <student>__<assignment>.ipynb, <student>/<assignment>.ipynb "
            "or nbgrader's [submitted/]<student>/<assignment>/<assignment>.ipynb."
        ),
    )
    grade_parser.add_argument("submissions", type=Path, help="folder of submitted notebooks")
    grade_parser.add_argument("--out", type=Path, default=Path("grading-output"), help="where to write")
    grade_parser.add_argument("--assignment", action="append", help="grade only this one (repeatable)")
    grade_parser.add_argument("--jobs", type=int, default=1, help="students graded at the same time")
    grade_parser.add_argument("--solutions", type=Path, default=REPO / "solutions", help="source notebooks")
    grade_parser.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell")
    grade_parser.add_argument("--student-timeout", type=int, default=900, help="seconds per student")
    grade_parser.add_argument("--memory-gb", type=float, default=4.0, help="memory per grading process")
    grade_parser.add_argument(
        "--processes-per-student",
        type=int,
        default=None,
        help="nbgrader processes sharing one student's notebooks (default: cores / jobs)",
    )
    grade_parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per graded notebook (default: 1 per core)"
    )
    grade_parser.set_defaults(run=grade)

    doctor_parser = commands.add_parser("doctor", help="check torch, device, backbone, data, nbgrader")
    doctor_parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the network")
    doctor_parser.set_defaults(run=doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tlcourse``."""
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        raise SystemExit("tlcourse grade: --jobs must be at least 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
