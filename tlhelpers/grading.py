"""Headless autograding with nbgrader: one throwaway course per student, results merged into one CSV.

``grade_folder`` is what ``tlcourse grade`` runs. For every student it

1. copies a template course (nbgrader config, source notebooks and a gradebook made once by
   ``nbgrader generate_assignment``) into a temporary folder, adds that student's notebooks as
   ``submitted/learner/<assignment>/<assignment>.ipynb`` and runs ``nbgrader autograde`` there, in a
   process tree with memory, CPU-time and wall-clock limits;
2. re-checks every exercise in a fresh Python process that imports the official checks before it
   runs any learner code, and runs only the learner's definitions (imports, functions, classes,
   constants) from the answer cells, never their top-level code. The final points of an exercise
   are the lower of nbgrader's and the re-check's, so a notebook that redefines a check,
   ``AssertionError`` or ``tlhelpers`` earns nothing from it (see ``_verify_worker``);
3. writes feedback HTML without the hidden tests, with a summary of the final grade on top.

The instructor's folders are only read; nothing is written outside the output folder.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import csv
import dataclasses
import html
import inspect
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# Each temporary course holds exactly one student, always under this id: the real name (which may
# hold any character an LMS allows) only appears in the CSV and the feedback folder.
LEARNER_ID = "learner"
FLAT_SEPARATOR = "__"
# The Colab setup cell (tools/colab.py) installs packages on Colab; its imports are not the course's.
COLAB_SETUP_TAG = "colab-setup"
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CSV_COLUMNS = ("student", "assignment", "score", "max_score", "status", "exercises", "notes", "feedback")


class GradingError(RuntimeError):
    """Grading cannot start (bad folder, missing solutions, nbgrader unusable); the message says why."""


@dataclasses.dataclass
class Limits:
    """Resource limits for grading one student (all notebooks) and for each cell."""

    cell_timeout: int = 120
    student_timeout: int = 900
    memory_gb: float = 4.0
    cpu_seconds: int = 900
    verify_timeout: int = 60
    # Threads for torch in each kernel and re-check. Students graded at the same time must not
    # each use every core: on 2 cores, two kernels with 2 busy-waiting threads each run many
    # times slower than two with one thread, and honest cells then hit their time limit.
    threads: int = 1
    # nbgrader processes per student, each grading its share of the notebooks at the same time, so
    # that one student's notebooks use every core (memory_gb applies to each process).
    processes_per_student: int = 1


@dataclasses.dataclass
class Exercise:
    """A graded test cell of a source notebook: its grade id, points and full source (hidden tests too)."""

    grade_id: str
    points: float
    source: str


@dataclasses.dataclass
class Assignment:
    """What the grader knows about one assignment, read from its source notebook in solutions/."""

    name: str
    exercises: list[Exercise]
    answer_ids: list[str]
    setup_code: str
    released_tests: dict[str, str]
    test_sources: dict[str, str]
    grade_ids: set[str]

    @property
    def max_score(self) -> float:
        return sum(exercise.points for exercise in self.exercises)


@dataclasses.dataclass
class Handin:
    """One notebook file a student handed in, with what was noticed while collecting it."""

    path: Path
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Result:
    """One row of the grades CSV: a student's final grade on one assignment."""

    student: str
    assignment: str
    score: float
    max_score: float
    status: str
    exercises: dict[str, tuple[float, float]]
    notes: list[str]
    feedback: str = ""

    def row(self) -> dict[str, str]:
        return {
            "student": self.student,
            "assignment": self.assignment,
            "score": _number(self.score),
            "max_score": _number(self.max_score),
            "status": self.status,
            "exercises": ";".join(f"{g}={_number(s)}/{_number(m)}" for g, (s, m) in self.exercises.items()),
            "notes": " | ".join(self.notes),
            "feedback": self.feedback,
        }


def _number(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- reading the course


def _nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_test_cell(cell) -> bool:
    meta = _nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.get("cell_type") == "code"


def strip_hidden_tests(source: str) -> str:
    """``source`` without its ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


def hidden_lines(source: str) -> list[str]:
    """The non-blank lines inside the hidden-test regions of ``source``."""
    shown = set(strip_hidden_tests(source).split("\n"))
    return [
        line for line in source.split("\n") if line.strip() and line not in shown and "HIDDEN" not in line
    ]


def python_source(cell_source: str) -> str:
    """A code cell as plain Python: IPython magics (``%matplotlib inline``) become function calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell_source)


def _imports_only(source: str) -> str:
    """The top-level import statements of a code cell (empty when it does not parse)."""
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError:
        return ""
    return "\n".join(
        ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    )


def read_assignment(solutions_dir: Path, name: str) -> Assignment:
    """Read the graded cells, answer cells and imports of ``solutions/<name>/<name>.ipynb``."""
    path = solutions_dir / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    exercises, answer_ids, setup, released, sources, grade_ids = [], [], [], {}, {}, set()
    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        if meta.get("grade_id"):
            grade_ids.add(meta["grade_id"])
        if cell.cell_type != "code":
            continue
        if _is_test_cell(cell):
            exercises.append(Exercise(meta["grade_id"], float(meta.get("points", 0)), cell.source))
            released[meta["grade_id"]] = strip_hidden_tests(cell.source)
            sources[meta["grade_id"]] = cell.source
        elif meta.get("solution"):
            answer_ids.append(meta["grade_id"])
        elif COLAB_SETUP_TAG not in cell.metadata.get("tags", []):
            setup.append(_imports_only(cell.source))
    if not exercises:
        raise GradingError(f"{path}: no graded test cell, nothing to grade")
    setup_code = "\n".join(s for s in setup if s)
    return Assignment(name, exercises, answer_ids, setup_code, released, sources, grade_ids)


def find_assignments(solutions_dir: Path) -> list[str]:
    """Assignment names in ``solutions_dir`` (folders NN_name holding NN_name.ipynb), sorted."""
    if not solutions_dir.is_dir():
        raise GradingError(f"no solutions folder at {solutions_dir}")
    names = sorted(
        p.name for p in solutions_dir.iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").is_file()
    )
    if not names:
        raise GradingError(f"{solutions_dir} holds no assignment (NN_name/NN_name.ipynb)")
    return names


# --------------------------------------------------------------------------- collecting submissions


def _assignment_by_name(stem: str, names: list[str]) -> str | None:
    matches = [name for name in names if name in stem]
    return max(matches, key=len) if matches else None


def _assignment_by_content(path: Path, assignments: dict[str, Assignment]) -> str | None:
    """The assignment whose grade ids the notebook shares most (None if unreadable or none shared)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        ids = {_nbgrader_meta(c).get("grade_id") for c in cells if isinstance(c, dict)}
    except (OSError, ValueError, AttributeError):
        return None
    overlap = {name: len(ids & a.grade_ids) for name, a in assignments.items()}
    best = max(overlap, key=overlap.get, default=None)
    return best if best and overlap[best] else None


def collect_submissions(
    folder: Path, assignments: dict[str, Assignment]
) -> tuple[dict[str, dict[str, Handin]], dict[str, list[str]], list[str]]:
    """Find every student's notebooks in ``folder``.

    Accepted layouts (mixable): ``<student>__<assignment>.ipynb`` files (what an LMS download
    gives once renamed), ``<student>/<assignment>.ipynb``, and nbgrader's
    ``[submitted/]<student>/<assignment>/<assignment>.ipynb``. A notebook is matched to an assignment
    by its nbgrader cell ids first (so ``Copy of 02_freezing (2).ipynb`` still counts), by its name
    otherwise. Returns (handins by student and assignment, notes by student, warnings).
    """
    if not folder.is_dir():
        raise GradingError(f"submissions folder {folder} does not exist")
    root = folder / "submitted" if (folder / "submitted").is_dir() else folder
    names = sorted(assignments)
    found: dict[str, dict[str, list[Path]]] = {}
    student_notes: dict[str, list[str]] = {}
    warnings: list[str] = []

    def add(student: str, path: Path, hint: str | None) -> None:
        found.setdefault(student, {})
        student_notes.setdefault(student, [])
        assignment = (
            _assignment_by_content(path, assignments) or hint or _assignment_by_name(path.stem, names)
        )
        if assignment is None:
            student_notes[student].append(f"could not tell which assignment {path.name} is; not graded")
        else:
            found[student].setdefault(assignment, []).append(path)

    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix != ".ipynb":
                continue
            student, separator, rest = entry.stem.partition(FLAT_SEPARATOR)
            if not separator or not student:
                warnings.append(f"{entry}: name it <student>{FLAT_SEPARATOR}<assignment>.ipynb; skipped")
                continue
            add(student, entry, _assignment_by_name(rest, names))
        elif entry.is_dir():
            notebooks = sorted(
                p for p in entry.rglob("*.ipynb") if not any(part.startswith(".") for part in p.parts)
            )
            found.setdefault(entry.name, {})
            student_notes.setdefault(entry.name, [])
            for path in notebooks:
                parent = path.parent.name if path.parent != entry else None
                add(entry.name, path, parent if parent in assignments else None)

    handins: dict[str, dict[str, Handin]] = {}
    for student, by_assignment in found.items():
        handins[student] = {}
        for assignment, paths in by_assignment.items():
            exact = [p for p in paths if p.name == f"{assignment}.ipynb" or p.stem.endswith(assignment)]
            chosen = max(exact or paths, key=lambda p: p.stat().st_mtime)  # the latest, by name first
            handin = Handin(chosen)
            if chosen.stem != assignment and not chosen.stem.endswith(FLAT_SEPARATOR + assignment):
                handin.notes.append(f"notebook was named {chosen.name!r}; graded as {assignment}.ipynb")
            others = [p.name for p in paths if p != chosen]
            if others:
                handin.notes.append(
                    f"several notebooks for {assignment}; graded {chosen.name}, ignored {others}"
                )
            handins[student][assignment] = handin
    return handins, student_notes, warnings


# --------------------------------------------------------------------------- running nbgrader safely

_LIMIT_LAUNCHER = (
    "import os, resource, sys\n"
    "memory, cpu = int(sys.argv[1]), int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def grading_env(scratch: Path, threads: int = 1) -> dict[str, str]:
    """Environment for nbgrader and its kernels: this interpreter, a private kernelspec and config.

    JUPYTER_PATH and JUPYTER_CONFIG_DIR point into ``scratch`` so that nothing in the grader's
    home (another kernelspec, an nbgrader config) changes how notebooks run.
    """
    kernel_dir = scratch / "jupyter-data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNELSPEC["display_name"],
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(kernel))
    (scratch / "jupyter-config").mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["JUPYTER_PATH"] = str(scratch / "jupyter-data")
    env["JUPYTER_CONFIG_DIR"] = str(scratch / "jupyter-config")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[variable] = str(threads)
    env.pop("NBGRADER_EXECUTION", None)
    return env


@dataclasses.dataclass
class Completed:
    """How a limited process tree ended: exit code, output, and why it was stopped (if it was)."""

    returncode: int
    output: str
    stopped: str = ""


# The data limit (RLIMIT_DATA = memory_gb) stops one process's allocations with a MemoryError that the
# notebook survives. The watchdog sums the resident memory of the whole tree, which also counts shared
# libraries (torch's alone are about 0.3 GB) and nbgrader's own process: it kills at memory_gb plus this,
# so that it catches what the data limit cannot (many processes), never a notebook the limit already held.
WATCHDOG_HEADROOM_BYTES = 1 << 30


def _watch(pid: int, finished, limits: Limits, timeout: float) -> str:
    """Watch the process tree of ``pid`` until ``finished()``; kill it on the time or memory limit.

    Returns why it was stopped, or "" when it finished by itself. Descendants seen while it ran
    (a kernel started by nbgrader) are killed at the end too, in case they outlived their parent;
    they are recognised by pid and start time, so a recycled pid is never hit.
    """
    import psutil

    memory = limits.memory_gb * (1 << 30) + WATCHDOG_HEADROOM_BYTES
    deadline = time.monotonic() + timeout
    seen: dict[int, float] = {}
    stopped = ""
    while not finished():
        members = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        rss = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                seen.setdefault(member.pid, member.create_time())
                rss += member.memory_info().rss
        if time.monotonic() > deadline:
            stopped = f"stopped after the time limit of {timeout:.0f} s"
        elif rss > memory:
            stopped = f"stopped when it used more than {memory / (1 << 30):g} GB of memory"
        if stopped:
            break
        time.sleep(0.2)
    for member_pid, started in seen.items():
        with contextlib.suppress(psutil.Error):
            member = psutil.Process(member_pid)
            if member.create_time() == started:
                member.kill()
    return stopped


def run_limited(command: list[str], *, cwd: Path, env: dict, limits: Limits, timeout: float) -> Completed:
    """Run ``command`` with memory/CPU rlimits, a wall-clock ``timeout`` and an RSS watchdog.

    The whole process tree (nbgrader and the kernels it starts) is killed when its resident
    memory exceeds ``limits.memory_gb`` or the time is up. Returns a ``Completed``.
    """
    memory = int(limits.memory_gb * (1 << 30))
    launcher = [sys.executable, "-c", _LIMIT_LAUNCHER, str(memory), str(limits.cpu_seconds)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            launcher + command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stopped = _watch(process.pid, lambda: process.poll() is not None, limits, timeout)
        process.wait()
        log.seek(0)
        text = log.read().decode("utf-8", errors="replace")
    return Completed(process.returncode, text, stopped)


def _nbgrader(args: list[str], course: Path, env: dict, limits: Limits, timeout: float) -> Completed:
    return run_limited(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, limits=limits, timeout=timeout
    )


def make_template(solutions_dir: Path, names: list[str], scratch: Path, env: dict) -> Path:
    """A course with our config, the source notebooks and a gradebook that knows every graded cell."""
    template = scratch / "template"
    template.mkdir()
    config = REPO / "nbgrader_config.py"
    if not config.is_file():
        raise GradingError(f"nbgrader configuration {config} is missing")
    shutil.copy2(config, template / "nbgrader_config.py")
    for name in names:
        shutil.copytree(
            solutions_dir / name,
            template / "solutions" / name,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
    # One nbgrader run releases every assignment copied above and records its cells in the gradebook.
    command = [
        sys.executable,
        "-m",
        "nbgrader",
        "generate_assignment",
        "--force",
        "--CourseDirectory.assignment_id=*",
    ]
    result = subprocess.run(command, cwd=template, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise GradingError(f"nbgrader generate_assignment failed:\n{result.stdout}{result.stderr}")
    return template


# --------------------------------------------------------------------------- preparing a submission


def prepare_notebook(handin: Handin, assignment: Assignment, target: Path) -> tuple[bool, list[str]]:
    """Copy a handed-in notebook to ``target`` in a form nbgrader can grade.

    Returns (usable, notes). Not usable when it is not a notebook at all. Repairs what makes
    nbgrader fail for the whole notebook: missing or repeated cell ids, test cells turned into
    markdown. Notes say which test cells were edited or deleted (nbgrader restores them).
    """
    notes = list(handin.notes)
    try:
        nb = nbformat.reads(handin.path.read_text(encoding="utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError) as error:
        notes.append(f"{handin.path.name} is not a readable notebook ({type(error).__name__}: {error})")
        return False, notes

    seen_ids, seen_grade_ids, cells = set(), set(), []
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader_meta(cell)
        grade_id = meta.get("grade_id")
        if grade_id in seen_grade_ids:
            cell.metadata.pop("nbgrader", None)  # a pasted copy of a graded cell would break grading
            grade_id = None
        if grade_id:
            seen_grade_ids.add(grade_id)
        if grade_id in assignment.released_tests and cell.cell_type != "code":
            continue  # restored from the gradebook as a code cell
        if not cell.get("id") or cell.id in seen_ids:
            cell.id = f"tl-cell-{index:04d}"
        seen_ids.add(cell.id)
        cells.append(cell)
    nb.cells = cells
    nb.metadata["kernelspec"] = dict(KERNELSPEC)

    present = {_nbgrader_meta(c).get("grade_id"): c for c in nb.cells if _nbgrader_meta(c).get("grade_id")}
    for grade_id, released in assignment.released_tests.items():
        cell = present.get(grade_id)
        if cell is None:
            notes.append(f"test cell {grade_id} was deleted; it was restored and graded")
        elif cell.source.strip() not in (released.strip(), assignment.test_sources[grade_id].strip()):
            notes.append(f"test cell {grade_id} was edited; it was graded as originally written")
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return True, notes


# --------------------------------------------------------------------------- re-checking exercises

ALLOWED_MODULES = {
    "torch", "torchvision", "timm", "numpy", "math", "itertools", "functools", "collections", "copy",
    "typing", "dataclasses", "PIL", "tlhelpers", "random", "statistics", "operator", "re", "time",
    "tqdm", "IPython", "matplotlib", "warnings", "contextlib", "abc", "enum", "string", "textwrap",
}  # fmt: skip
ALLOWED_DUNDERS = {
    "__init__", "__len__", "__getitem__", "__iter__", "__next__", "__repr__", "__str__", "__name__",
    "__call__", "__enter__", "__exit__", "__post_init__", "__doc__", "__version__",
}  # fmt: skip
FORBIDDEN_NAMES = {
    "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint", "open",
    "input", "exit", "quit", "memoryview",
}  # fmt: skip
# Modules an answer may neither import nor reach through another module (``tl.models.os``).
FORBIDDEN_MODULES = {
    "os", "sys", "subprocess", "builtins", "importlib", "ctypes", "gc", "inspect", "shutil", "socket",
    "signal", "threading", "multiprocessing", "pickle", "marshal", "types", "pathlib", "io",
}  # fmt: skip
FRAME_ATTRIBUTES = {
    "f_back",
    "f_locals",
    "f_globals",
    "f_builtins",
    "tb_frame",
    "gi_frame",
    "cr_frame",
    "ag_frame",
}


def extract_definitions(source: str) -> tuple[str, list[str]]:
    """The definitions in an answer cell: imports, functions, classes, constants; and what was dropped.

    A constant is an assignment to plain names of a value that calls nothing, such as
    ``BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)``. Top-level statements that do anything else
    (prints, demos, calls, assignments to attributes) are left out, so they cannot run before or
    during the re-check.
    """
    tree = ast.parse(python_source(source))
    kept, dropped = [], []
    for node in tree.body:
        keep = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            calls = any(isinstance(n, (ast.Call, ast.NamedExpr, ast.Await)) for n in ast.walk(node.value))
            keep = not calls and all(isinstance(t, ast.Name) for t in targets)
        (kept if keep else dropped).append(ast.unparse(node))
    return "\n\n".join(kept), dropped


def find_tampering(code: str, protected_names: set[str]) -> list[str]:
    """Constructs in learner definitions that could change how the checks judge them.

    A static screen, not a sandbox: it refuses what honest answers to these exercises never need
    (dynamic code, frame and dunder access, comparison overrides, unlisted imports, rebinding the
    checks or AssertionError, writing attributes of imported modules).
    """
    tree = ast.parse(code)
    modules = set()
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                problems.append("relative import")
                continue
            for alias in node.names:
                full = node.module if isinstance(node, ast.ImportFrom) else alias.name
                if full.split(".")[0] not in ALLOWED_MODULES:
                    problems.append(f"imports {full}")
                if isinstance(node, ast.Import):
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_MODULES:
                problems.append(f"uses {node.id}")
            elif node.id in FORBIDDEN_NAMES:
                problems.append(f"uses {node.id}()")
            elif isinstance(node.ctx, (ast.Store, ast.Del)) and node.id in protected_names:
                problems.append(f"redefines {node.id}")
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_MODULES:
                problems.append(f"reaches {ast.unparse(node)}")
            elif node.attr in FRAME_ATTRIBUTES:
                problems.append(f"reads interpreter frames (.{node.attr})")
            elif isinstance(node.ctx, (ast.Store, ast.Del)):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and (base.id in modules or base.id in protected_names):
                    problems.append(f"changes {ast.unparse(node)}")
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in protected_names:
            problems.append(f"redefines {node.name}")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            problems.extend(f"rebinds {name}" for name in node.names if name in protected_names)
        for name in _identifiers(node):
            if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS:
                problems.append(f"uses {name}")
    return sorted(set(problems))


def _identifiers(node) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.findall(r"__\w+__", node.value)
    if isinstance(node, ast.keyword) and node.arg:
        return [node.arg]
    return []


def _verify_worker(job_path: str, report_path: str) -> None:
    """Run in a fresh process: re-check learner definitions against the official checks.

    Reads a JSON job from ``job_path`` and writes one line per test to ``report_path``. Before any
    learner code runs it imports the official setup (tlhelpers and its checks), keeps references
    to the check functions, and records the identity of the globals the checks rely on (see
    ``_integrity_snapshot``). Each test cell runs in a fresh namespace where the official names
    are bound again over anything the learner defined. After each test the records are compared:
    any change (a patched check, builtin or torch function) voids that result and the rest.
    Result lines start with a nonce the learner code never sees; its own output is discarded.
    """
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    nonce = job.pop("nonce")
    report = open(report_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (open until the end)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    def emit(**record):
        report.write(nonce + json.dumps(record) + "\n")

    import signal
    import traceback

    class _TimeUp(BaseException):
        pass

    def alarm(*_):
        raise _TimeUp

    signal.signal(signal.SIGALRM, alarm)

    def run_setup(source: str, namespace: dict) -> None:
        # One import at a time: a module that fails to import must not take the others with it.
        for statement in ast.parse(source).body:
            with contextlib.suppress(Exception):
                exec(compile(ast.Module([statement], []), "<official setup>", "exec"), namespace)

    official_namespaces = {}
    for notebook in job["notebooks"]:
        namespace = {"__name__": "__official__"}
        run_setup(notebook["setup"], namespace)
        official_namespaces[notebook["assignment"]] = namespace
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (kept open for the learner's prints)
    before = _integrity_snapshot()

    for notebook in job["notebooks"]:
        official = official_namespaces[notebook["assignment"]]
        learner = {"__name__": "__learner__"}
        try:
            signal.alarm(job["timeout"])
            run_setup(notebook["setup"], learner)
            exec(compile(notebook["definitions"], f"<{notebook['assignment']} answers>", "exec"), learner)
            signal.alarm(0)
            problem = None
        except _TimeUp:
            problem = "defining the answers took too long"
        except BaseException as error:  # the learner's code may raise anything, SystemExit included
            signal.alarm(0)
            problem = f"running the answer cells raised {type(error).__name__}: {error}"
        for test in notebook["tests"]:
            record = {"assignment": notebook["assignment"], "grade_id": test["grade_id"]}
            if problem:
                emit(**record, passed=False, message=problem)
                continue
            namespace = {**learner, **{k: v for k, v in official.items() if not k.startswith("__")}}
            try:
                signal.alarm(job["timeout"])
                exec(compile(test["source"], f"<{test['grade_id']}>", "exec"), namespace)
                signal.alarm(0)
                passed, message = True, ""
            except _TimeUp:
                passed, message = False, f"the check did not finish within {job['timeout']} s"
            except BaseException as error:
                signal.alarm(0)
                passed = False
                message = "".join(traceback.format_exception_only(type(error), error)).strip()
            changed = _integrity_changes(before)
            if changed:
                emit(**record, passed=False, tampered=True, message=f"the code changed {changed}")
                return
            emit(**record, passed=passed, message=message[:500])


def _integrity_snapshot() -> dict:
    """What the learner's code must not change: the identity of the globals the checks rely on.

    Every global of tlhelpers counts; in builtins, torch, numpy, timm, torchvision and PIL, the
    functions, classes and modules do (plain data there may be a cache that changes legitimately).
    """
    import builtins

    import torch

    spaces = {"builtins": vars(builtins)}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("tlhelpers", "torch", "numpy", "timm", "torchvision", "PIL"):
            spaces[name] = getattr(module, "__dict__", {})
    for cls in (torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Parameter, AssertionError):
        spaces[f"class {cls.__qualname__}"] = cls.__dict__

    def watched(space_name: str, value) -> bool:
        return space_name.startswith("tlhelpers") or callable(value) or inspect.ismodule(value)

    identities = {
        name: {key: id(value) for key, value in list(space.items()) if watched(name, value)}
        for name, space in spaces.items()
    }
    return {"spaces": spaces, "ids": identities, "hooks": (id(sys.gettrace()), id(sys.getprofile()))}


def _integrity_changes(before: dict) -> str:
    """The first watched global that is not what it was in ``before`` (empty when none)."""
    if (id(sys.gettrace()), id(sys.getprofile())) != before["hooks"]:
        return "the interpreter's trace or profile hook"
    for name, space in before["spaces"].items():
        for key, identity in before["ids"][name].items():
            if key not in _VOLATILE_GLOBALS and id(space.get(key, _MISSING)) != identity:
                return f"{name}.{key}"
    return ""


_MISSING = object()
# Module globals that ordinary library code rebinds while it runs (caches, counters).
_VOLATILE_GLOBALS = {"__warningregistry__", "_once_registry", "_filters_version"}


def _verify_entry(job_path: str, report_path: str, cwd: str, memory: int, cpu: int, threads: int) -> None:
    """Start of a re-check process (forked from a server that imported the checks): limits, then work."""
    import resource

    import torch

    torch.set_num_threads(threads)

    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(cwd)
    _verify_worker(job_path, report_path)


_FORK_SERVER_LOCK = threading.Lock()


def _fork_server():
    """A multiprocessing fork server that imports tlhelpers and its checks once.

    Each re-check forks from it: a process in which no learner code has ever run, without paying
    for importing torch again (about 4 s of CPU per student).
    """
    import multiprocessing

    with _FORK_SERVER_LOCK:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tlhelpers.checks"])
        return context


def _run_recheck(payload: str, course: Path, limits: Limits, timeout: float) -> Completed:
    token = secrets.token_hex(8)
    job_path, report_path = course / f"recheck-{token}.json", course / f"recheck-{token}.out"
    job_path.write_text(payload, encoding="utf-8")
    memory = int(limits.memory_gb * (1 << 30))
    args = (str(job_path), str(report_path), str(course), memory, limits.cpu_seconds, limits.threads)
    process = _fork_server().Process(target=_verify_entry, args=args)
    process.start()
    stopped = _watch(process.pid, lambda: process.exitcode is not None, limits, timeout)
    process.join()
    output = report_path.read_text(encoding="utf-8", errors="replace") if report_path.is_file() else ""
    job_path.unlink()
    report_path.unlink(missing_ok=True)
    return Completed(process.exitcode, output, stopped)


def verify(jobs: list[dict], *, course: Path, limits: Limits) -> dict[tuple[str, str], dict]:
    """Re-check the exercises of ``jobs`` in fresh processes; results by (assignment, grade_id).

    A crash or time-out fails the test that was running and the worker restarts for the rest.
    """
    results: dict[tuple[str, str], dict] = {}
    pending = [dict(job, tests=list(job["tests"])) for job in jobs if job["tests"]]
    attempts = 0
    while pending and attempts < 8:
        attempts += 1
        nonce = secrets.token_hex(16)
        payload = json.dumps({"nonce": nonce, "timeout": limits.verify_timeout, "notebooks": pending})
        total = sum(len(job["tests"]) for job in pending)
        completed = _run_recheck(payload, course, limits, timeout=60 + limits.verify_timeout * (total + 1))
        for line in completed.output.splitlines():
            if line.startswith(nonce):
                with contextlib.suppress(ValueError):
                    record = json.loads(line[len(nonce) :])
                    results[(record["assignment"], record["grade_id"])] = record
        if any(record.get("tampered") for record in results.values()):
            for job in pending:
                for test in job["tests"]:
                    results.setdefault(
                        (job["assignment"], test["grade_id"]),
                        {"passed": False, "tampered": True, "message": "not checked after tampering"},
                    )
            break
        still = []
        for job in pending:
            left = [t for t in job["tests"] if (job["assignment"], t["grade_id"]) not in results]
            if (
                left
                and len(left) == len(job["tests"])
                and completed.returncode == 0
                and not completed.stopped
            ):
                continue  # the worker ended normally without reporting: leave it to the note below
            if left:
                why = completed.stopped or f"the process died (exit code {completed.returncode})"
                results[(job["assignment"], left[0]["grade_id"])] = {"passed": False, "message": why}
                if left[1:]:
                    still.append(dict(job, tests=left[1:]))
        pending = still
    missing = [
        (j["assignment"], t["grade_id"])
        for j in jobs
        for t in j["tests"]
        if (j["assignment"], t["grade_id"]) not in results
    ]
    for key in missing:
        results[key] = {"passed": False, "message": "the re-check reported nothing"}
    return results


# --------------------------------------------------------------------------- one student


def _read_gradebook(course: Path, names: list[str]) -> dict[str, dict[str, tuple[float | None, float]]]:
    """(automatic score, maximum) of every grade cell of each notebook; the score is None until
    nbgrader has executed and scored the notebook."""
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    database = course / "gradebook.db"
    with Gradebook(f"sqlite:///{database}") as gradebook:
        for name in names:
            try:
                notebook = gradebook.find_submission_notebook(name, name, LEARNER_ID)
            except MissingEntry:
                continue
            scores[name] = {g.name: (g.auto_score, g.max_score) for g in notebook.grades}
    return scores


def _failure_reason(log: str, completed: Completed) -> str:
    if completed.stopped:
        return f"nbgrader was {completed.stopped}"
    for pattern, reason in (
        (r"DeadKernelError|Kernel died|kernel died", "the kernel died while running the notebook"),
        (r"CellTimeoutError|Timeout waiting", "a cell did not finish within the time limit"),
        (r"MemoryError", "the notebook ran out of memory"),
    ):
        if re.search(pattern, log):
            return reason
    return f"nbgrader could not grade it (exit code {completed.returncode})"


def _sanitize_for_feedback(path: Path, assignment: Assignment, summary_markdown: str) -> None:
    """Remove hidden tests (sources and tracebacks) from an autograded notebook; add the summary on top."""
    nb = nbformat.read(path, as_version=4)
    test_ids = {e.grade_id for e in assignment.exercises}
    for cell in nb.cells:
        cell.source = strip_hidden_tests(cell.source)
        if cell.cell_type == "code" and _nbgrader_meta(cell).get("grade_id") in test_ids:
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
    summary = nbformat.v4.new_markdown_cell(summary_markdown)
    summary.id = "tl-grade-summary"
    nb.cells.insert(0, summary)
    nbformat.write(nb, path)


def _summary_markdown(result: Result) -> str:
    lines = [f"## Grade: {_number(result.score)} / {_number(result.max_score)}", ""]
    lines += [f"- `{html.escape(g)}`: {_number(s)} / {_number(m)}" for g, (s, m) in result.exercises.items()]
    if result.notes:
        lines += ["", "**Notes**", ""] + [f"- {html.escape(note)}" for note in result.notes]
    return "\n".join(lines)


def _summary_html(result: Result) -> str:
    items = "".join(
        f"<li><code>{html.escape(g)}</code>: {_number(s)} / {_number(m)}</li>"
        for g, (s, m) in result.exercises.items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(result.assignment)}</title>"
        f"</head><body><h2>{html.escape(result.assignment)}: {_number(result.score)} / "
        f"{_number(result.max_score)}</h2><ul>{items}</ul>"
        + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")
        + "</body></html>\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _safe_folder_name(student: str) -> str:
    return re.sub(r"[^\w.@-]", "_", student).lstrip(".") or "_"


def grade_student(
    student: str,
    handins: dict[str, Handin],
    student_notes: list[str],
    assignments: dict[str, Assignment],
    *,
    template: Path,
    scratch: Path,
    out_dir: Path,
    limits: Limits,
    unverifiable: set[tuple[str, str]] = frozenset(),
) -> list[Result]:
    """Grade every assignment of one student in a private copy of the template course."""
    course = Path(tempfile.mkdtemp(prefix="student-", dir=scratch)) / "course"
    shutil.copytree(template, course)
    env = grading_env(course.parent, limits.threads)
    notes = {name: list(student_notes) for name in assignments}
    usable = []
    for name, handin in handins.items():
        target = course / "submitted" / LEARNER_ID / name / f"{name}.ipynb"
        ok, handin_notes = prepare_notebook(handin, assignments[name], target)
        notes[name] += handin_notes
        if ok:
            usable.append(name)

    jobs, tampering = [], {}
    for name in usable:
        path = course / "submitted" / LEARNER_ID / name / f"{name}.ipynb"
        skip = {grade_id for assignment, grade_id in unverifiable if assignment == name}
        job, tampering[name], dropped_notes = _verify_job(path, assignments[name], skip)
        notes[name] += dropped_notes
        jobs.append(job)
    course_of = _split_courses(course, template, usable, limits.processes_per_student)
    groups = {home: [name for name in usable if course_of[name] == home] for home in course_of.values()}
    test_ids = {name: [e.grade_id for e in assignments[name].exercises] for name in usable}

    def combine(name: str, scores: dict, failures: dict, checked: dict) -> Result:
        return _combine(
            student,
            assignments[name],
            notes[name],
            handed_in=name in handins,
            usable=name in usable,
            tampering=tampering.get(name, {}),
            scores=scores.get(name, {}),
            failure=failures.get(name),
            checked=checked,
        )

    def grade_group(home: Path, names: list[str]) -> list[Result]:
        """nbgrader on one course folder, then its results and feedback, while other groups still run."""
        scores, failures = _autograde(home, names, test_ids, env, limits)
        checked = rechecking.result()
        finished = [combine(name, scores, failures, checked) for name in names]
        for result in finished:
            _write_feedback(result, home, assignments[result.assignment], out_dir)
        _generate_feedback_html(finished, home, assignments, out_dir)
        return finished

    # The re-check needs nothing from nbgrader, so it runs while nbgrader works.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1 + len(groups)) as background:
        rechecking = background.submit(verify, jobs, course=course, limits=limits)
        grading = [background.submit(grade_group, home, names) for home, names in groups.items()]
        by_name = {result.assignment: result for future in grading for result in future.result()}
    for name in assignments:
        if name not in by_name:
            by_name[name] = combine(name, {}, {}, {})
            _write_feedback(by_name[name], course, assignments[name], out_dir)
    shutil.rmtree(course.parent, ignore_errors=True)
    return [by_name[name] for name in assignments]


def _combine(
    student: str,
    assignment: Assignment,
    notes: list[str],
    *,
    handed_in: bool,
    usable: bool,
    tampering: dict[str, list[str]],
    scores: dict[str, tuple[float | None, float]],
    failure: str | None,
    checked: dict[tuple[str, str], dict],
) -> Result:
    """One row: nbgrader's scores and the re-check's combined exercise by exercise (the lower counts)."""
    name = assignment.name
    result = Result(student, name, 0.0, assignment.max_score, "graded", {}, notes)
    if not handed_in:
        result.status = "missing"
        result.notes.append(f"no notebook for {name} was handed in")
    elif not usable:
        result.status = "unreadable"
    if failure:
        result.status = "autograde-failed"
        result.notes.append(f"{failure}; scored by re-running the checks on your answers alone")
    for exercise, problems in tampering.items():
        result.status = "flagged"
        result.notes.append(
            f"{exercise}: answer not accepted, its code could interfere with grading "
            f"({', '.join(sorted(set(problems)))})"
        )
    for exercise in assignment.exercises:
        auto = scores.get(exercise.grade_id)
        record = checked.get((name, exercise.grade_id))
        recheck = None if record is None else (exercise.points if record["passed"] else 0.0)
        candidates = [s for s in (auto[0] if auto else None, recheck) if s is not None]
        flagged = exercise_of(exercise.grade_id) in tampering
        score = min(candidates) if candidates and not flagged else 0.0
        result.exercises[exercise.grade_id] = (score, exercise.points)
        if record and record.get("tampered"):
            result.status = "flagged"
            result.notes.append(f"{exercise.grade_id}: answers not accepted, {record['message']}")
        elif auto and recheck is not None and recheck < auto[0]:
            result.status = "flagged"
            result.notes.append(
                f"{exercise.grade_id}: passed in the notebook but not when re-checked on its own "
                f"({_last_line(record['message'])})"
            )
        elif auto is None and record and not record["passed"] and failure:
            result.notes.append(f"{exercise.grade_id}: {_last_line(record['message'])}")
    result.score = sum(s for s, _ in result.exercises.values())
    return result


def _split_courses(course: Path, template: Path, names: list[str], processes: int) -> dict[str, Path]:
    """Spread the handed-in notebooks in ``course`` over up to ``processes`` course folders.

    Each extra folder is a copy of ``template`` to which some notebooks are moved, so that one
    nbgrader process per folder can grade them at the same time. Returns the folder of each name.
    """
    shares = [names[index::processes] for index in range(max(1, processes))]
    course_of = dict.fromkeys(shares[0], course)
    for index, share in enumerate(shares[1:], start=1):
        if not share:
            continue
        home = course.parent / f"course-{index}"
        shutil.copytree(template, home)
        for name in share:
            target = home / "submitted" / LEARNER_ID / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(course / "submitted" / LEARNER_ID / name, target)
            course_of[name] = home
    return course_of


def _autograde(course: Path, usable: list[str], test_ids: dict[str, list[str]], env: dict, limits: Limits):
    """Run ``nbgrader autograde`` on the notebooks in ``usable``; (scores, failure reasons) by assignment.

    ``test_ids`` has the grade ids of each assignment's test cells, all of which must be scored."""
    scores, failures = {}, {}
    if not usable:
        return scores, failures
    timeout = min(limits.student_timeout, 60 + len(usable) * limits.cell_timeout * 10)
    args = ["autograde", "--force", f"--student={LEARNER_ID}", f"--Execute.timeout={limits.cell_timeout}"]
    args += ["--Execute.execute_retries=0", "--Execute.startup_timeout=120"]
    args += ["--CourseDirectory.assignment_id=*"] if len(usable) > 1 else [usable[0]]
    completed = _nbgrader(args, course, env, limits, timeout)
    scores = _read_gradebook(course, usable)
    for name in usable:
        autograded = course / "autograded" / LEARNER_ID / name / f"{name}.ipynb"
        if not _fully_scored(scores.get(name), test_ids[name]) or not autograded.is_file():
            scores.pop(name, None)
            failures[name] = _failure_reason(completed.output, completed)
    return scores, failures


def _fully_scored(grades: dict[str, tuple[float | None, float]] | None, test_ids: list[str]) -> bool:
    """Whether nbgrader scored every test cell. A run stopped half-way leaves the notebook copied into
    autograded/ and its grades in the gradebook without scores: that is a failed run, not zero points."""
    return grades is not None and all(grades.get(grade_id, (None,))[0] is not None for grade_id in test_ids)


def _last_line(message: str) -> str:
    return message.strip().splitlines()[-1] if message.strip() else "failed"


def exercise_of(grade_id: str) -> str:
    """The exercise a cell belongs to: the prefix of its grade id (``ex2`` for ``ex2_count_parameters``)."""
    return grade_id.split("_")[0]


def _verify_job(
    path: Path, assignment: Assignment, skip: set[str] = frozenset()
) -> tuple[dict, dict[str, list[str]], list[str]]:
    """The re-check job for the notebook at ``path``, the tampering found per exercise, and notes.

    An answer cell with suspicious code is left out of the job and its exercise scores zero.
    Test cells named in ``skip`` are not re-checked.
    """
    nb = nbformat.read(path, as_version=4)
    answers = {_nbgrader_meta(c).get("grade_id"): c.source for c in nb.cells if c.cell_type == "code"}
    protected = {"AssertionError", "tlhelpers", "tl", "checks"}
    protected |= set(re.findall(r"\b(check_\w+)", assignment.setup_code))
    definitions, tampering, notes = [], {}, []
    for grade_id in assignment.answer_ids:
        if grade_id not in answers:
            notes.append(f"answer cell {grade_id} was deleted")
            continue
        try:
            kept, _dropped = extract_definitions(answers[grade_id])
        except SyntaxError as error:
            notes.append(f"answer cell {grade_id} has a syntax error (line {error.lineno}): {error.msg}")
            continue
        problems = find_tampering(kept, protected)
        if problems:
            tampering.setdefault(exercise_of(grade_id), []).extend(problems)
        else:
            definitions.append(kept)
    tests = [
        {"grade_id": e.grade_id, "source": e.source}
        for e in assignment.exercises
        if exercise_of(e.grade_id) not in tampering and e.grade_id not in skip
    ]
    code = "\n\n".join(definitions)
    job = {"assignment": assignment.name, "setup": assignment.setup_code, "definitions": code, "tests": tests}
    return job, tampering, notes


def calibrate(
    solutions_dir: Path, assignments: dict[str, Assignment], course: Path, limits: Limits
) -> set[tuple[str, str]]:
    """(assignment, grade id) of the tests whose re-check fails on the reference solution itself.

    That is a problem of the grader, not of a learner: those tests keep nbgrader's score instead of
    the lower of nbgrader's and the re-check's.
    """
    jobs = [_verify_job(solutions_dir / name / f"{name}.ipynb", a)[0] for name, a in assignments.items()]
    checked = verify(jobs, course=course, limits=limits)
    return {key for key, record in checked.items() if not record["passed"]}


def _feedback_target(out_dir: Path, result: Result) -> Path:
    return out_dir / "feedback" / _safe_folder_name(result.student) / f"{result.assignment}.html"


def _write_feedback(result: Result, course: Path, assignment: Assignment, out_dir: Path) -> None:
    """Prepare the autograded notebook for feedback, or write a summary page when there is none."""
    autograded = course / "autograded" / LEARNER_ID / result.assignment / f"{result.assignment}.ipynb"
    result.feedback = str(_feedback_target(out_dir, result).relative_to(out_dir))
    if autograded.is_file():
        _sanitize_for_feedback(autograded, assignment, _summary_markdown(result))
    else:
        _write_atomic(_feedback_target(out_dir, result), _summary_html(result))


_FEEDBACK_LOCK = threading.Lock()


def _generate_feedback_html(results, course, assignments, out_dir) -> None:
    """Render feedback HTML with nbgrader's API in this process (it runs no learner code)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    graded = [r for r in results if (course / "autograded" / LEARNER_ID / r.assignment).is_dir()]
    for result in graded:
        with _FEEDBACK_LOCK:
            api = NbGraderAPI(coursedir=CourseDirectory(root=str(course)))
            outcome = api.generate_feedback(result.assignment, LEARNER_ID)
        produced = course / "feedback" / LEARNER_ID / result.assignment / f"{result.assignment}.html"
        text = produced.read_text(encoding="utf-8") if produced.is_file() else ""
        secret = [line for e in assignments[result.assignment].exercises for line in hidden_lines(e.source)]
        leaked = [line for line in secret if html.escape(line.strip()) in text or line.strip() in text]
        if not text or leaked:
            if text:
                result.notes.append("feedback withheld because it showed hidden tests")
            else:
                result.notes.append(f"feedback could not be generated: {outcome.get('error', '')[-300:]}")
            text = _summary_html(result)
        _write_atomic(_feedback_target(out_dir, result), text)


# --------------------------------------------------------------------------- the whole folder


def write_csv(results: list[Result], path: Path) -> None:
    """Write the grades CSV atomically (a temporary file renamed over ``path``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for result in sorted(results, key=lambda r: (r.student, r.assignment)):
        writer.writerow(result.row())
    _write_atomic(path, buffer.getvalue())


def grade_folder(
    submissions: Path,
    out_dir: Path,
    *,
    solutions_dir: Path = REPO / "solutions",
    assignment_names: list[str] | None = None,
    jobs: int = 1,
    limits: Limits | None = None,
    log=print,
) -> list[Result]:
    """Grade every student in ``submissions``; write ``out_dir/grades.csv`` and ``out_dir/feedback/``.

    Every student found gets one row per assignment graded (the ``assignment_names`` given, or
    every assignment anyone handed in), whatever happened to their notebooks.
    """
    limits = limits or Limits()
    # nbgrader changes the working folder while it renders feedback: only absolute paths from here on.
    submissions, out_dir, solutions_dir = submissions.resolve(), out_dir.resolve(), solutions_dir.resolve()
    available = find_assignments(solutions_dir)
    if assignment_names:
        unknown = sorted(set(assignment_names) - set(available))
        if unknown:
            raise GradingError(f"unknown assignment(s) {unknown}; {solutions_dir} has {available}")
    everything = {name: read_assignment(solutions_dir, name) for name in available}
    handins, student_notes, warnings = collect_submissions(submissions, everything)
    for warning in warnings:
        log(f"warning: {warning}")
    if not handins:
        raise GradingError(f"found no student submissions in {submissions}")
    names = assignment_names or sorted({name for by in handins.values() for name in by})
    if not names:
        names = available
    assignments = {name: everything[name] for name in names}
    out_dir.mkdir(parents=True, exist_ok=True)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tl-grade-") as scratch_name:
        scratch = Path(scratch_name)
        env = grading_env(scratch, limits.threads)
        log(f"Preparing the course for {', '.join(names)} ...")
        template = make_template(solutions_dir, names, scratch, env)
        unverifiable = calibrate(solutions_dir, assignments, template, limits)
        for name, grade_id in sorted(unverifiable):
            log(f"warning: the reference {name} fails the re-check of {grade_id}; using nbgrader's score")
        started = time.monotonic()

        def one(student: str) -> list[Result]:
            begin = time.monotonic()
            mine = {name: h for name, h in handins[student].items() if name in assignments}
            try:
                rows = grade_student(
                    student,
                    mine,
                    student_notes.get(student, []),
                    assignments,
                    template=template,
                    scratch=scratch,
                    out_dir=out_dir,
                    limits=limits,
                    unverifiable=unverifiable,
                )
            except Exception as error:  # one broken student must not stop the others
                rows = [
                    Result(student, name, 0.0, a.max_score, "error", {}, [f"grading failed: {error!r}"])
                    for name, a in assignments.items()
                ]
            total = sum(r.score for r in rows)
            log(f"  {student}: {_number(total)} points in {time.monotonic() - begin:.1f} s")
            return rows

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for rows in pool.map(one, sorted(handins)):
                results.extend(rows)
        log(f"Graded {len(handins)} student(s) in {time.monotonic() - started:.1f} s")
    write_csv(results, out_dir / "grades.csv")
    return results
