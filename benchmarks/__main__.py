"""``python -m benchmarks [--only head,strategies,diagnosis,efficiency,course,grading] [--quick|--tiny]``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from tlhelpers.data import eval_transforms, find_hymenoptera, image_folder, train_transforms
from tlhelpers.models import load_pretrained
from tlhelpers.utils import pick_device

from .course import REPO, benchmark_course, benchmark_grading, solution_notebooks
from .head import benchmark_head
from .measure import PeakMemory, machine_info
from .report import load_results, write_results
from .strategies import (
    StrategySettings,
    benchmark_data_efficiency,
    benchmark_finetune_diagnosis,
    benchmark_strategies,
)
from .tiny import make_tiny_image_folder, tiny_backbone

SECTIONS = ("head", "strategies", "diagnosis", "efficiency", "course", "grading")
NEEDS_NOTEBOOKS = {"course", "grading"}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCRATCH_DIR = Path(__file__).resolve().parent / ".scratch"
# The course's six assignments; a missing one is listed as not measured.
COURSE_ASSIGNMENTS = (
    "01_imagenet_features",
    "02_freezing",
    "03_replacing_the_head",
    "04_training_the_head",
    "05_fine_tuning",
    "06_capstone",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="real data, smallest budgets: a smoke run (not for the README)"
    )
    mode.add_argument(
        "--tiny", action="store_true", help="tiny synthetic backbone and images, seconds (what the tests run)"
    )
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results; .scratch for --quick/--tiny)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--backbone", help="name for tl.load_pretrained (default: TL_BACKBONE, else auto)")
    parser.add_argument(
        "--head-epochs", type=int, help="epochs of both paths of the head benchmark (section 1; default 20)"
    )
    parser.add_argument(
        "--finetune-epochs", type=int, help="epochs of every end-to-end strategy (section 2; default 5)"
    )
    parser.add_argument("--seeds", type=int, help="seeds per strategy (default 3)")
    parser.add_argument("--diagnosis-seeds", type=int, help="seeds per fine-tuning variant (default 2)")
    parser.add_argument("--efficiency-seeds", type=int, help="seeds per subset size (default 5)")
    parser.add_argument("--note", action="append", default=[], help="a note to print under every section run")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite results.md and the plot from results.json",
    )
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.tiny and NEEDS_NOTEBOOKS & set(args.sections):
        if args.only != parser.get_default("only"):
            parser.error("--tiny cannot run course or grading (they need the real notebooks)")
        args.sections = [name for name in args.sections if name not in NEEDS_NOTEBOOKS]
    if args.out is None:
        args.out = SCRATCH_DIR if (args.quick or args.tiny) else RESULTS_DIR
    return args


def budgets(args) -> dict:
    """Epochs and seeds: the issue's settings, the smallest ones for --quick/--tiny, or what was asked."""
    small = args.quick or args.tiny
    return {
        # Section 1: 20 epochs keep `--only head,course` under 5 minutes on 2 idle CPU cores (the
        # textbook loop pays ~7.5 s per epoch there); the speed-up grows with epochs (see results.md).
        "head_epochs": args.head_epochs or (2 if small else 20),
        # Linear heads in sections 2 and 2b train as long as notebook 04 trains its head.
        "linear_epochs": 2 if small else 30,
        # An end-to-end epoch costs ~20 s on 2 idle CPU cores: 4 strategies x 3 seeds x 5 epochs ~ 20 min.
        "finetune_epochs": args.finetune_epochs or (1 if small else 5),
        "seeds": tuple(range(args.seeds or (1 if small else 3))),
        "diagnosis_seeds": tuple(range(args.diagnosis_seeds or (1 if small else 2))),
        "efficiency_seeds": tuple(range(args.efficiency_seeds or (2 if small else 5))),
        "per_class": (2, None) if args.tiny else ((5, None) if args.quick else (5, 10, 25, 50, None)),
    }


def _busy_note(machine: dict, load_at_end: float | None) -> str | None:
    loads = [load for load in (machine["load_average_1min"], load_at_end) if load is not None]
    # The benchmark itself keeps every core busy; half a core more means something else was running.
    if loads and max(loads) > machine["cpu_cores"] + 0.5:
        return (
            f"the machine was busy with other jobs (1-min load average up to {max(loads):.1f} on "
            f"{machine['cpu_cores']} cores), so wall times are inflated and noisy; ratios measured "
            "side by side in one run are affected less than absolute seconds."
        )
    return None


def _readme_for(out: Path) -> Path | None:
    """The README whose summary table follows the results: only for the committed results folder."""
    return REPO / "README.md" if out.resolve() == RESULTS_DIR.resolve() else None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render_only:
        results = load_results(args.out)
        if not results["sections"]:
            raise SystemExit(f"{args.out / 'results.json'} holds no results to render")
        print(f"Wrote {', '.join(map(str, write_results(results, args.out, _readme_for(args.out))))}")
        return 0
    device = torch.device(args.device) if args.device else pick_device()
    plan = budgets(args)
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as scratch:
        if args.tiny:
            backbone = tiny_backbone()
            data_root = make_tiny_image_folder(Path(scratch) / "tiny")
        else:
            backbone = load_pretrained(args.backbone)
            data_root = find_hymenoptera()
        print(
            f"Benchmarks on {device} with backbone {backbone.name}; data {data_root}; results -> {args.out}"
        )
        train_plain = image_folder(data_root / "train", eval_transforms(backbone))
        val = image_folder(data_root / "val", eval_transforms(backbone))
        train_augmented = image_folder(data_root / "train", train_transforms(backbone))
        notebooks = solution_notebooks(REPO / "solutions")

        with PeakMemory(torch.device("cpu")) as probe:
            pass
        measured = {}
        for name in args.sections:
            print(f"[{name}]")
            machine = machine_info(device, backbone.name) | {"backbone_reason": backbone.reason}
            started = time.perf_counter()
            if name == "head":
                section = benchmark_head(
                    backbone, train_plain, val, epochs=plan["head_epochs"], device=device
                )
            elif name == "strategies":
                settings = StrategySettings(
                    seeds=plan["seeds"],
                    finetune_epochs=plan["finetune_epochs"],
                    head_epochs=plan["linear_epochs"],
                )
                section = benchmark_strategies(
                    backbone, train_augmented, train_plain, val, settings=settings, device=device
                )
            elif name == "diagnosis":
                settings = StrategySettings(
                    seeds=plan["diagnosis_seeds"],
                    finetune_epochs=plan["finetune_epochs"],
                    head_epochs=plan["linear_epochs"],
                )
                section = benchmark_finetune_diagnosis(
                    backbone, train_augmented, train_plain, val, settings=settings, device=device
                )
            elif name == "efficiency":
                section = benchmark_data_efficiency(
                    backbone,
                    train_plain,
                    val,
                    per_class=plan["per_class"],
                    seeds=plan["efficiency_seeds"],
                    epochs=plan["linear_epochs"],
                    device=device,
                )
            elif name == "course":
                chosen = notebooks[:1] if args.quick else notebooks
                section = benchmark_course(chosen, data_root)
                present = {notebook.parent.name for notebook in chosen}
                section["missing"] = [n for n in COURSE_ASSIGNMENTS if n not in present]
            elif not (REPO / "nbgrader_config.py").is_file():
                section = {
                    "not_measured": f"there is no nbgrader configuration at {REPO / 'nbgrader_config.py'}"
                }
            else:
                chosen = notebooks[:1] if args.quick else notebooks
                assignments = [notebook.parent.name for notebook in chosen]
                section = benchmark_grading(REPO / "solutions", assignments, data_root)
            section["machine"] = machine
            section["section_seconds"] = time.perf_counter() - started
            section["run_by"] = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
            load_at_end = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            section["notes"] = [note for note in [_busy_note(machine, load_at_end), *args.note] if note]
            if args.quick or args.tiny:
                section["notes"].insert(0, "smoke run (--quick/--tiny): budgets far below the real ones.")
            measured[name] = section
            # Read the file again just before writing, so that sections another run wrote meanwhile stay.
            results = load_results(args.out)
            results["sections"].update(measured)
            results["cpu_memory_method"] = probe.method
            written = write_results(results, args.out, _readme_for(args.out))
            print(
                f"[{name}] done in {section['section_seconds']:.0f} s; wrote {', '.join(map(str, written))}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
