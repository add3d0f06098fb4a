"""The kit's command line: ``python -m uld COMMAND ...``.

    python -m uld notebooks --preset {ci,cpu,gpu} --out DIR [--only PATTERN] [--in-place]
    python -m uld data [--out DIR]      # regenerate the embedded offline tasks
    python -m uld assets [--out DIR] [--teachers]   # real tokenizers, tiny models (and task teachers) into the cache
    python -m uld distill --config FILE [--set key=value ...] --out DIR [--overwrite]   # one run
    python -m uld replicate --grid FILE [--preset NAME] --out DIR   # a grid of runs, resumable, results table
    python -m uld train-teacher --task TASK --out DIR [--set field=value ...]   # a task teacher (TeacherRecipe)
    python -m uld pretrain-student --name NAME --out DIR [--set field=value ...]  # a pretrained student
    python -m uld evaluate --model NAME --task TASK --out DIR [--split test] [--tasks-dir DIR] [--shots N] [--limit N]

Exit codes: 0 done, 1 something ran and failed, 2 the request itself is wrong (one line
on standard error says why), 130 interrupted (Ctrl-C; the same command resumes).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m uld", description="Universal Logit Distillation kit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    notebooks = commands.add_parser("notebooks", help="execute the notebook sequence with papermill")
    notebooks.add_argument("--preset", required=True, help="ci, cpu or gpu")
    notebooks.add_argument("--out", required=True, type=Path, help="folder for executed notebooks and metrics")
    notebooks.add_argument("--only", help="run only notebooks whose name matches (glob or substring, e.g. 03)")
    notebooks.add_argument("--in-place", action="store_true",
                           help="also copy each executed notebook over the committed one (refreshes outputs)")
    notebooks.add_argument("--notebooks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    data = commands.add_parser("data", help="regenerate the embedded offline tasks (seeded, byte for byte)")
    data.add_argument("--out", type=Path, default=None, help="folder (default: the kit's data/tasks)")
    data.add_argument("--seed", type=int, default=None, help="a different seed gives different tasks")
    assets = commands.add_parser("assets", help="materialise real tokenizers and tiny models offline")
    assets.add_argument("--out", type=Path, default=None, help="cache folder (default: $ULD_CACHE or ~/.cache/uld)")
    assets.add_argument("--teachers", action="store_true", help="also train the task teachers (minutes each)")
    distill = commands.add_parser("distill", help="one run: teacher answers, training, evaluation")
    distill.add_argument("--config", type=Path, help="YAML file of DistillConfig fields (see configs/)")
    distill.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one field")
    distill.add_argument("--out", required=True, help="run folder")
    distill.add_argument("--overwrite", action="store_true", help="redo a finished run in --out")
    replicate = commands.add_parser("replicate", help="a grid of runs (configs/grids), resumable, aggregated")
    replicate.add_argument("--grid", required=True, type=Path, help="grid file (base, grid, runner)")
    replicate.add_argument("--out", required=True, type=Path, help="folder for cells, results.csv/.md/.png")
    replicate.add_argument("--preset", help="a size the grid file offers under presets (e.g. ci, cpu, gpu)")
    teacher = commands.add_parser("train-teacher", help="train a task teacher on fresh records of an embedded task")
    teacher.add_argument("--task", required=True, help="extractive_qa, generative_qa or dialogue_summary")
    teacher.add_argument("--out", required=True, type=Path, help="the teacher's folder (e.g. data/teachers/TASK)")
    teacher.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="a TeacherRecipe field, e.g. steps=4000")
    student = commands.add_parser("pretrain-student", help="pretrain a default student on generator text")
    student.add_argument("--name", required=True, help="pretrained-student or pretrained-student-shared")
    student.add_argument("--out", required=True, type=Path, help="the student's folder (e.g. data/students/NAME)")
    student.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="a PretrainingRecipe field, e.g. steps=3000")
    evaluate = commands.add_parser("evaluate", help="score one model on one task with its own prompt")
    evaluate.add_argument("--model", required=True, help="a kit model, a folder or a hub id")
    evaluate.add_argument("--task", required=True, help="a task name (uld.data.TASKS)")
    evaluate.add_argument("--split", default="test", help="train, validation, test or eval (default: test)")
    evaluate.add_argument("--tasks-dir", type=Path, default=None,
                          help="read embedded tasks from this folder (python -m uld data --out DIR --seed N)")
    evaluate.add_argument("--shots", type=_count, default=0, help="few-shot examples in a teacher prompt")
    evaluate.add_argument("--limit", type=_count, default=None, help="the first N questions only")
    evaluate.add_argument("--prompt", choices=("teacher", "student"), default=None,
                          help="override the prompt (default: teacher for the kit's teachers, else student)")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for metrics.json and predictions.jsonl")
    return parser


def _count(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args, argv)
    except KeyboardInterrupt:  # finished work is on disk: the same command resumes
        print(f"\npython -m uld {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _run(args, argv) -> int:
    if args.command == "notebooks":
        from uld.locks import FolderBusy
        from uld.runner import NOTEBOOKS_DIR, UsageError, run_notebooks

        try:
            results = run_notebooks(args.preset, args.out, args.only, args.in_place,
                                    args.notebooks_dir or NOTEBOOKS_DIR)
        except (UsageError, FolderBusy) as problem:
            print(f"python -m uld notebooks: error: {problem}", file=sys.stderr)
            return 2
        failed = [r.stem for r in results if r.status != "ok"]
        print(f"notebooks: {len(results) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    if args.command == "data":
        from uld.data import DATA_DIR
        from uld.embedded import SEED, write_tasks

        for path in write_tasks(args.out or DATA_DIR, SEED if args.seed is None else args.seed):
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        return 0
    if args.command == "assets":
        from uld.models import materialise_assets

        report = materialise_assets(args.out, teachers=args.teachers)
        print(f"assets: {len(report['made'])} made, {len(report['present'])} already present, "
              f"{len(report['skipped'])} skipped")
        return 0
    if args.command == "distill":
        from uld.data import TaskUnavailable
        from uld.distill import DistillConfig, RunFinished, run_distillation
        from uld.locks import one_writer
        from uld.models import ModelUnavailable

        try:
            config = DistillConfig.load(args.config, args.set, args.out)
            with one_writer(config.out):
                run_distillation(config, overwrite=args.overwrite)
        except (ValueError, OSError, RunFinished, ModelUnavailable, TaskUnavailable) as problem:
            print(f"python -m uld distill: error: {str(problem).splitlines()[0]}", file=sys.stderr)
            return 2
        return 0
    if args.command == "replicate":
        from uld.replicate import load_grid, run_grid

        from uld.locks import FolderBusy

        try:
            grid = load_grid(args.grid, args.preset)
            report = run_grid(grid, args.out)
        except (ValueError, FolderBusy) as problem:
            print(f"python -m uld replicate: error: {str(problem).splitlines()[0]}", file=sys.stderr)
            return 2
        print((args.out / "results.md").read_text(), end="")
        print(f"replicate: {len(report['done'])} run, {len(report['skipped'])} already finished, "
              f"{len(report['failed'])} failed; results in {args.out / 'results.csv'}, {args.out / 'results.png'}")
        return 1 if report["failed"] else 0
    if args.command in ("train-teacher", "pretrain-student"):
        from uld.pretraining import PretrainingRecipe, pretrain_student
        from uld.task_teachers import TeacherRecipe, train_task_teacher
        from uld.training_loop import with_settings

        try:
            if (args.out / "uld.json").exists():
                raise ValueError(f"{args.out} already holds a trained model; remove it to train again")
            command = "python -m uld " + shlex.join(argv if argv is not None else sys.argv[1:])
            if args.command == "train-teacher":
                train_task_teacher(args.task, args.out, with_settings(TeacherRecipe(), args.set), command=command)
            else:
                pretrain_student(args.name, args.out, with_settings(PretrainingRecipe(), args.set), command=command)
        except ValueError as problem:
            print(f"python -m uld {args.command}: error: {str(problem).splitlines()[0]}", file=sys.stderr)
            return 2
        return 0
    if args.command == "evaluate":
        from uld.data import TaskUnavailable
        from uld.evaluation import evaluate_model
        from uld.models import ModelUnavailable

        if args.limit == 0:
            print("python -m uld evaluate: error: --limit must be at least 1", file=sys.stderr)
            return 2
        try:
            evaluate_model(args.model, args.task, args.out, split=args.split, tasks_dir=args.tasks_dir,
                           shots=args.shots, limit=args.limit, prompt=args.prompt)
        except (ValueError, OSError, ModelUnavailable, TaskUnavailable) as problem:
            print(f"python -m uld evaluate: error: {str(problem).splitlines()[0]}", file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
