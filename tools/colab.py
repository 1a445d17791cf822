"""Keep the course notebooks ready to open in Colab, from the repository address in pyproject.toml.

    .venv/bin/python tools/colab.py           # update solutions/*/*.ipynb and README.md in place
    .venv/bin/python tools/colab.py --check   # exit 1, naming the files that are out of date

The address is `Repository` under `[project.urls]` in pyproject.toml, and only there: change it
there and run this tool. For every instructor notebook solutions/NN_name/NN_name.ipynb it makes sure

* the title cell (the first cell, a markdown cell starting with a `# ` heading) shows an
  "Open in Colab" badge under the heading, linking to the student copy course/NN_name/NN_name.ipynb
  on the main branch;
* the second cell, and so the first code cell, is the Colab setup cell (id and tag `colab-setup`),
  not graded: on Colab it installs this repository's package next to Colab's own torch and
  torchvision; anywhere else it prints one line and does nothing.

It also rewrites the block between the `colab-links` markers in README.md: one badge per notebook.
course/ is left alone: tools/release.py regenerates it from solutions/, badge and setup cell included.

Each file is read from disk, changed and written back at once (through a temporary file and a
rename), so edits others make to other cells of the same notebook in the meantime are kept.
Running it twice changes nothing the second time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
BRANCH = "main"
SETUP_CELL_ID = "colab-setup"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open in Colab\]", re.IGNORECASE)
GITHUB_ADDRESS = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(\.git)?/?$")
README_START = "<!-- colab-links: start (written by tools/colab.py from pyproject.toml; do not edit) -->"
README_END = "<!-- colab-links: end -->"

SETUP_SOURCE = """\
# Run this cell first. On Colab it installs the course's helper package, tlhelpers, next to Colab's own
# torch and torchvision, pinned to the versions Colab has so that pip cannot replace them.
# Anywhere else it does nothing: there tlhelpers comes from your own environment.
import subprocess
import sys
from importlib import metadata

if "google.colab" in sys.modules:
    from google.colab import output

    package = "tlhelpers @ git+REPOSITORY_ADDRESS"
    keep = [f"{name}=={metadata.version(name)}" for name in ("torch", "torchvision")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package, *keep], check=True)
    output.enable_custom_widget_manager()  # lets Colab draw the course's ipywidgets
    print(f"Colab: installed {package}; kept {' and '.join(keep)}; enabled widgets.")
else:
    print("Not on Colab: nothing to install, tlhelpers comes from this environment.")"""


class ColabError(RuntimeError):
    """The repository or a notebook is not in a shape this tool can update; the message says why."""


def repository_address(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The GitHub address under ``[project.urls] Repository`` in pyproject.toml, without a trailing slash."""
    urls = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("urls", {})
    address = urls.get("Repository", "").strip()
    if not GITHUB_ADDRESS.match(address):
        raise ColabError(
            f"{pyproject}: [project.urls] Repository must be a https://github.com/OWNER/NAME address "
            f"(Colab opens notebooks from GitHub); found {address!r}"
        )
    return address.rstrip("/").removesuffix(".git")


def colab_url(address: str, name: str) -> str:
    """Where Colab opens the student copy of assignment ``name``."""
    match = GITHUB_ADDRESS.match(address)
    return (
        f"https://colab.research.google.com/github/{match['owner']}/{match['name']}"
        f"/blob/{BRANCH}/course/{name}/{name}.ipynb"
    )


def badge(address: str, name: str) -> str:
    return f"[![Open in Colab]({BADGE_IMAGE})]({colab_url(address, name)})"


def setup_source(address: str) -> str:
    return SETUP_SOURCE.replace("REPOSITORY_ADDRESS", address)


def titled_with_badge(source: str, badge_line: str, where: str) -> str:
    """The title cell's source with exactly one badge, on its own paragraph right under the heading."""
    lines = source.split("\n")
    if not lines or not lines[0].startswith("# "):
        raise ColabError(f"{where}: the first cell must be the title, a markdown cell starting with '# '")
    rest = [line for line in lines[1:] if not BADGE_LINE.match(line)]
    while rest and not rest[0].strip():
        rest.pop(0)
    return "\n".join([lines[0], "", badge_line, *([""] + rest if rest else [])])


def is_setup_cell(cell) -> bool:
    return cell.get("id") == SETUP_CELL_ID or SETUP_CELL_ID in cell.metadata.get("tags", [])


def new_setup_cell(address: str):
    cell = nbformat.v4.new_code_cell(setup_source(address))
    cell.id = SETUP_CELL_ID
    cell.metadata["tags"] = [SETUP_CELL_ID]
    return cell


def updated_notebook(text: str, address: str, name: str, where: str) -> str:
    """The notebook ``text`` with its badge and setup cell as they should be, in the repository's layout.

    Everything else (other cells, their nbgrader metadata, notebook metadata) is kept as it is.
    """
    nb = nbformat.reads(text, as_version=4)
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        raise ColabError(f"{where}: the first cell must be the title, a markdown cell starting with '# '")
    nb.cells[0].source = titled_with_badge(nb.cells[0].source, badge(address, name), where)

    existing = [cell for cell in nb.cells if is_setup_cell(cell)]
    for cell in existing:
        if cell.metadata.get("nbgrader"):
            raise ColabError(f"{where}: the {SETUP_CELL_ID} cell must not be an nbgrader cell")
    if existing and existing[0] is nb.cells[1] and len(existing) == 1:
        cell = existing[0]
        cell.cell_type = "code"
        cell.source = setup_source(address)
        tags = [tag for tag in cell.metadata.get("tags", []) if tag != SETUP_CELL_ID]
        cell.metadata["tags"] = [SETUP_CELL_ID, *tags]
    else:
        taken = {cell.get("id") for cell in nb.cells if not is_setup_cell(cell)}
        if SETUP_CELL_ID in taken:
            raise ColabError(f"{where}: another cell already has the id {SETUP_CELL_ID!r}")
        nb.cells = [nb.cells[0], new_setup_cell(address)] + [c for c in nb.cells[1:] if not is_setup_cell(c)]

    nbformat.validate(nb)
    return nbformat.writes(nb).rstrip("\n") + "\n"


def readme_block(address: str, names: list[str]) -> str:
    lines = [README_START, ""]
    lines += [f"- `{name}` {badge(address, name)}" for name in names]
    return "\n".join([*lines, "", README_END])


def updated_readme(text: str, address: str, names: list[str]) -> str:
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ColabError(f"README.md: no block between {README_START!r} and {README_END!r} to fill in")
    return text[:start] + readme_block(address, names) + text[end + len(README_END) :]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename, keeping its permissions; never half-written."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def notebooks(solutions_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in solutions_dir.glob("*/*.ipynb")
        if not path.parent.name.startswith(".") and path.stem == path.parent.name
    )


def sync(repo: Path = REPO, *, write: bool) -> list[Path]:
    """Bring the notebooks and README.md of ``repo`` in line with its address.

    Returns the files that were out of date (and, with ``write``, have been rewritten).
    """
    address = repository_address(repo / "pyproject.toml")
    paths = notebooks(repo / "solutions")
    if not paths:
        raise ColabError(f"{repo / 'solutions'} holds no NN_name/NN_name.ipynb notebooks")
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        wanted = updated_notebook(text, address, path.stem, str(path.relative_to(repo)))
        if wanted != text:
            stale.append(path)
            if write:
                write_atomically(path, wanted)

    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8")
    wanted = updated_readme(text, address, [path.stem for path in paths])
    if wanted != text:
        stale.append(readme)
        if write:
            write_atomically(readme, wanted)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; fail if anything is out of date")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    try:
        stale = sync(repo, write=not args.check)
    except ColabError as error:
        print(f"colab: {error}", file=sys.stderr)
        return 2
    names = [str(path.relative_to(repo)) for path in stale]
    if args.check:
        if stale:
            print(
                "Out of date with the repository address in pyproject.toml (run `python tools/colab.py`):\n  "
                + "\n  ".join(names),
                file=sys.stderr,
            )
            return 1
        print("Colab badges, setup cells and README links match pyproject.toml.")
        return 0
    print(f"Updated {len(names)} file(s)" + "".join(f"\n  {name}" for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
