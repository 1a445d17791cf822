"""Benchmarks 3 and 4: what running the course costs a learner, and what grading it costs a server.

3. Every solution notebook runs under ``pytest --nbval-lax`` in its own subprocess, one after the
   other (as ``make test`` runs them), all sharing one fresh feature cache (``TL_CACHE``): the first
   notebook that extracts features pays for it and later ones reuse the cache, as for a learner who
   works through the course in order on a new machine.
4. Each reference notebook is handed in to a throwaway nbgrader course and graded with plain
   ``nbgrader autograde``, which runs it with ``NBGRADER_EXECUTION`` set (heavy cells skip, as on a
   grading server); then one learner's complete submission (every reference notebook) goes through
   the course's own grading command, ``tlcourse grade``, which adds limits and a re-check.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from tlhelpers.cli import load_repository_tool

from .measure import run_measured

REPO = Path(__file__).resolve().parent.parent
COURSE_SECONDS_BUDGET = 600
COURSE_MEMORY_BUDGET = 3 * 1024**3
GRADING_SECONDS_BUDGET = 30
STUDENT = "benchmark"
# Grading a class: 2 students at a time on the 2-core machine, enough students to keep both busy.
CLASS_SIZE = 4
CLASS_JOBS = 2


def solution_notebooks(solutions_dir: Path) -> list[Path]:
    """The reference notebooks, ``solutions/<name>/<name>.ipynb``, in course order."""
    return sorted(
        folder / f"{folder.name}.ipynb"
        for folder in solutions_dir.glob("[0-9]*")
        if (folder / f"{folder.name}.ipynb").is_file()
    )


def benchmark_course(
    notebooks: list[Path], data_root: Path, *, repo: Path = REPO, timeout: float = 1800.0, log=print
) -> dict:
    """Run each notebook under ``pytest --nbval-lax`` in a subprocess; wall time and peak memory each.

    ``data_root`` is the ants-vs-bees folder the notebooks get through ``TL_DATA``.
    """
    release = load_repository_tool("release", repo)  # lays out scratch nbgrader courses
    rows = []
    with tempfile.TemporaryDirectory(prefix="tl-bench-course-") as scratch_name:
        scratch = Path(scratch_name)
        env = release.nbgrader_env(scratch)
        env.update(TL_CACHE=str(scratch / "cache"), TL_DATA=str(data_root))
        for notebook in notebooks:
            command = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider"]
            run = run_measured([*command, str(notebook)], cwd=repo, env=env, timeout=timeout)
            row = {
                "notebook": notebook.parent.name,
                "passed": run.returncode == 0,
                "seconds": run.seconds,
                "peak_rss_bytes": run.peak_rss_bytes,
                "peak_tree_rss_bytes": run.peak_tree_rss_bytes,
            }
            if run.returncode != 0:
                row["output_tail"] = run.output_tail[-1500:]
            log(
                f"  {row['notebook']}: {'passed' if row['passed'] else 'FAILED'} in {run.seconds:.0f} s, "
                f"peak RSS {run.peak_rss_bytes / 1024**2:.0f} MiB"
            )
            rows.append(row)
    total = sum(row["seconds"] for row in rows)
    peak = max((row["peak_rss_bytes"] for row in rows), default=0)
    targets = [
        {
            "target": f"all notebooks in <= {COURSE_SECONDS_BUDGET // 60} min",
            "measured": f"{total:.0f} s",
            "passed": total <= COURSE_SECONDS_BUDGET,
        },
        {
            "target": f"peak kernel RSS <= {COURSE_MEMORY_BUDGET / 1024**3:.0f} GB",
            "measured": f"{peak / 1024**3:.2f} GB",
            "passed": peak <= COURSE_MEMORY_BUDGET,
        },
        {
            "target": "every notebook passes under nbval",
            "measured": f"{sum(row['passed'] for row in rows)}/{len(rows)}",
            "passed": all(row["passed"] for row in rows),
        },
    ]
    return {
        "command": "pytest --nbval-lax -q -p no:cacheprovider solutions/<nb>/<nb>.ipynb, one subprocess each",
        "memory_method": (
            "peak RSS of the largest single process in the run (the Jupyter kernel), from each "
            "process's own high-water mark (VmHWM); the tree column is the largest sum of the RSS of "
            "pytest and the kernel seen while polling every 0.2 s"
        ),
        "notebooks": rows,
        "total_seconds": total,
        "peak_rss_bytes": peak,
        "targets": targets,
        "passed": all(target["passed"] for target in targets),
    }


def _submission_points(root: Path, env: dict, assignment: str) -> dict:
    """Points the autograder gave, the points it can give, and the points left to a human grader."""
    from nbgrader.api import Gradebook

    previous_path = os.environ.get("PATH", "")
    os.environ["PATH"] = env["PATH"]  # the Gradebook runs `alembic` from PATH
    try:
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            submission = gradebook.find_submission(assignment, STUDENT)
            grades = [grade for notebook in submission.notebooks for grade in notebook.grades]
            automatic = [grade for grade in grades if grade.auto_score is not None]
            return {
                "score": sum(grade.auto_score for grade in automatic),
                "max_score": sum(grade.max_score for grade in automatic),
                "manual_points": sum(grade.max_score for grade in grades if grade.auto_score is None),
            }
    finally:
        os.environ["PATH"] = previous_path


def benchmark_grading(
    solutions_dir: Path,
    assignments: list[str],
    data_root: Path,
    *,
    repo: Path = REPO,
    timeout: float = 900.0,
    log=print,
) -> dict:
    """Autograde each reference notebook as one complete submission; seconds and score per assignment.

    ``data_root`` is the ants-vs-bees folder the notebooks get through ``TL_DATA``.
    """
    release = load_repository_tool("release", repo)  # lays out scratch nbgrader courses
    rows = []
    with tempfile.TemporaryDirectory(prefix="tl-bench-grading-") as scratch_name:
        scratch = Path(scratch_name)
        root = scratch / "course-root"
        release.make_scratch_course(solutions_dir, assignments, root)
        env = release.nbgrader_env(scratch)
        env.update(TL_CACHE=str(scratch / "cache"), TL_DATA=str(data_root))
        for name in assignments:
            release.run_nbgrader(root, env, "generate_assignment", name, "--force")
            handed_in = root / "submitted" / STUDENT / name
            handed_in.mkdir(parents=True)
            shutil.copyfile(solutions_dir / name / f"{name}.ipynb", handed_in / f"{name}.ipynb")
            command = [sys.executable, "-m", "nbgrader", "autograde", name, "--student", STUDENT, "--force"]
            run = run_measured(command, cwd=root, env=env, timeout=timeout)
            points = (
                _submission_points(root, env, name)
                if run.returncode == 0
                else {"score": 0.0, "max_score": None, "manual_points": None}
            )
            row = {
                "assignment": name,
                "graded": run.returncode == 0,
                "seconds": run.seconds,
                **points,
                "peak_rss_bytes": run.peak_rss_bytes,
            }
            if run.returncode != 0:
                row["output_tail"] = run.output_tail[-1500:]
            log(f"  {name}: {points['score']}/{points['max_score']} automatic points in {run.seconds:.1f} s")
            rows.append(row)
    # The budget is for one learner's complete submission: every notebook of the course.
    complete_submission = sum(row["seconds"] for row in rows)
    full_marks = sum(row["graded"] and row["score"] == row["max_score"] for row in rows)
    targets = [
        {
            "target": f"plain `nbgrader autograde`, one notebook after another: a complete submission "
            f"in <= {GRADING_SECONDS_BUDGET} s",
            "measured": f"{complete_submission:.1f} s",
            "passed": complete_submission <= GRADING_SECONDS_BUDGET,
        },
        {
            "target": "reference solutions get every automatic point",
            "measured": f"{full_marks}/{len(rows)}",
            "passed": full_marks == len(rows),
        },
    ]
    tlcourse = tlcourse_class = None
    if importlib.util.find_spec("tlhelpers.cli") is not None:
        log("  tlcourse grade, one learner, every notebook ...")
        tlcourse = benchmark_grading_cli(solutions_dir, assignments, data_root, repo=repo)
        log(f"  tlcourse grade: {tlcourse['seconds_per_submission']} s for the learner")
        log(f"  tlcourse grade --jobs {CLASS_JOBS}, a class of {CLASS_SIZE} learners ...")
        tlcourse_class = benchmark_grading_cli(
            solutions_dir, assignments, data_root, learners=CLASS_SIZE, jobs=CLASS_JOBS, repo=repo
        )
        per_submission = tlcourse_class["seconds_per_submission"]
        log(f"  tlcourse grade --jobs {CLASS_JOBS}: {per_submission} s per submission")
        for position, (run, what) in enumerate(
            [
                (tlcourse, "one learner alone"),
                (tlcourse_class, f"a class of {CLASS_SIZE} with --jobs {CLASS_JOBS}, time per submission"),
            ]
        ):
            per_submission = run["seconds_per_submission"]
            targets.insert(
                1 + position,
                {
                    "target": f"`tlcourse grade`, {what}: a submission in <= {GRADING_SECONDS_BUDGET} s",
                    "measured": f"{per_submission:.1f} s" if per_submission is not None else "grading failed",
                    "passed": per_submission is not None and per_submission <= GRADING_SECONDS_BUDGET,
                },
            )
    return {
        "command": f"nbgrader autograde <assignment> --student {STUDENT} --force",
        "tlcourse": tlcourse,
        "tlcourse_class": tlcourse_class,
        "assignments": rows,
        "total_seconds": sum(row["seconds"] for row in rows),
        "targets": targets,
        "passed": all(target["passed"] for target in targets),
    }


# `tlcourse grade` logs one line per student ("  <student>: <points> points in <seconds> s") and,
# at the end, "Graded <n> student(s) in <seconds> s" (grading only, without the course preparation).
_STUDENT_LINE = re.compile(r"^\s+(?P<student>\S+): (?P<points>[\d.]+) points in (?P<seconds>[\d.]+) s$", re.M)
_TOTAL_LINE = re.compile(r"^Graded (?P<students>\d+) student\(s\) in (?P<seconds>[\d.]+) s$", re.M)


def benchmark_grading_cli(
    solutions_dir: Path,
    assignments: list[str],
    data_root: Path,
    *,
    learners: int = 1,
    jobs: int = 1,
    repo: Path = REPO,
    timeout: float = 1800.0,
) -> dict:
    """Grade ``learners`` complete submissions (every reference notebook) with ``tlcourse grade --jobs``.

    ``seconds_per_submission`` is the grading time the command reports divided by ``learners``;
    ``seconds`` is the whole command, including the one-off preparation of the course that every
    grading run pays.
    """
    with tempfile.TemporaryDirectory(prefix="tl-bench-tlcourse-") as scratch_name:
        scratch = Path(scratch_name)
        for learner in range(learners):
            handed_in = scratch / "submissions" / f"{STUDENT}{learner}"
            handed_in.mkdir(parents=True)
            for name in assignments:
                shutil.copyfile(solutions_dir / name / f"{name}.ipynb", handed_in / f"{name}.ipynb")
        env = dict(os.environ, TL_DATA=str(data_root), TL_CACHE=str(scratch / "cache"))
        env.pop("NBGRADER_EXECUTION", None)
        command = [sys.executable, "-m", "tlhelpers.cli", "grade", str(scratch / "submissions")]
        command += ["--out", str(scratch / "out"), "--solutions", str(solutions_dir), "--jobs", str(jobs)]
        run = run_measured(command, cwd=repo, env=env, timeout=timeout)
        total = _TOTAL_LINE.search(run.output_tail)
        grades_csv = scratch / "out" / "grades.csv"
        rows = list(csv.DictReader(grades_csv.open())) if grades_csv.is_file() else []
    result = {
        "command": f"tlcourse grade <notebooks of {learners} learner(s)> --jobs {jobs} --out <folder>",
        "learners": learners,
        "jobs": jobs,
        "graded": run.returncode == 0 and total is not None,
        "seconds": run.seconds,
        "grading_seconds": float(total["seconds"]) if total else None,
        "seconds_per_submission": float(total["seconds"]) / learners if total else None,
        "learner_seconds": [float(m["seconds"]) for m in _STUDENT_LINE.finditer(run.output_tail)],
        "score": sum(float(row["score"]) for row in rows),
        "max_score": sum(float(row["max_score"]) for row in rows),
        "peak_rss_bytes": run.peak_rss_bytes,
    }
    if not result["graded"]:
        result["output_tail"] = run.output_tail[-1500:]
    return result
