"""The `ssmbench` command: run, bench, report, export, models, presets.

Every bad input is caught here, at the edge, before anything is written: it exits with code 2
and one line on standard error that says what is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ssmbench.experiment.config import PRESETS, ConfigError
from ssmbench.ops.scan import BACKENDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ssmbench: error: {message} (see `{self.prog} --help`)\n")


def _list_of(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as YAML (16 -> int, 0.2 -> float, true -> bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ssmbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run", help="train every model × task × length × lr × wd × seed, measure costs, report"
    )
    run.add_argument(
        "--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)"
    )
    run.add_argument("--config", type=Path, help="YAML file overriding the preset")
    run.add_argument("--models", type=_list_of(str, "model names"))
    run.add_argument("--lengths", type=_list_of(int, "integers"))
    run.add_argument("--seeds", type=_list_of(int, "integers"))
    run.add_argument("--lrs", type=_list_of(float, "numbers"), help="learning rates to sweep")
    run.add_argument(
        "--weight-decays", type=_list_of(float, "numbers"), help="weight decays to sweep"
    )
    run.add_argument("--steps", type=int, help="maximum training steps per cell")
    run.add_argument("--task", help="the task (see `ssmbench tasks`; default selective-copy)")
    run.add_argument(
        "--task-param",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="a task parameter (repeatable), e.g. --task-param num_kv_pairs=16",
    )
    run.add_argument(
        "--eval-lengths",
        type=_list_of(int, "integers"),
        help="lengths the best weights are tested at after training (training length included)",
    )
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--scan", choices=BACKENDS)
    run.add_argument("--threads", type=int, help="torch threads per cell")
    run.add_argument(
        "--plugins",
        type=_list_of(str, "module names"),
        help="modules to import first; they may register more models",
    )
    run.add_argument("--executor", choices=["local", "ray"])
    run.add_argument("--workers", type=int, help="cells at once (local executor)")
    run.add_argument("--ray-address", help="auto or HOST:PORT of a running Ray cluster")
    run.add_argument("--ray-num-cpus", type=float, help="CPUs per cell on Ray (default 1)")
    run.add_argument("--ray-num-gpus", type=float, help="GPUs per CUDA cell on Ray (default 1)")
    run.add_argument("--retries", type=int, help="Ray retries of a cell whose worker died")
    run.add_argument("--out", type=Path, help="output folder (default runs/PRESET)")
    run.add_argument(
        "--force",
        action="store_true",
        help="start clean: discard every result and checkpoint in --out",
    )

    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the cells and a cost estimate from a few timed steps, then exit",
    )

    bench = sub.add_parser("bench", help="time, memory and utilization only, no training")
    bench.add_argument("--models", type=_list_of(str, "model names"))
    bench.add_argument("--lengths", type=_list_of(int, "integers"), default=[256, 512, 784])
    bench.add_argument("--n-tokens", type=int, default=16)
    bench.add_argument("--batch-size", type=int, default=64)
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    bench.add_argument("--json", action="store_true", help="print JSON rows instead of tables")

    report = sub.add_parser("report", help="redraw report.md and the plots from a store")
    report.add_argument("out", type=Path)

    export = sub.add_parser("export", help="print a store's results as csv, json or md")
    export.add_argument("out", type=Path)
    export.add_argument("--format", choices=["csv", "json", "md"], default="json")
    export.add_argument(
        "--summary",
        action="store_true",
        help="one row per model × task setting × length: chosen lr, mean, std, 95%% CI, costs",
    )

    sub.add_parser("models", help="list the models with their parameter counts")
    sub.add_parser("tasks", help="list the tasks with their parameters and defaults")
    sub.add_parser("presets", help="list the presets: description, cells, estimated cost")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flat = {
        "models": args.models,
        "lengths": args.lengths,
        "seeds": args.seeds,
        "lrs": args.lrs,
        "weight_decays": args.weight_decays,
        "device": args.device,
        "scan": args.scan,
        "threads": args.threads,
        "executor": args.executor,
        "workers": args.workers,
        "ray_address": args.ray_address,
        "plugins": args.plugins,
        "ray_num_cpus": args.ray_num_cpus,
        "ray_num_gpus": args.ray_num_gpus,
        "retries": args.retries,
    }
    overrides = {k: v for k, v in flat.items() if v is not None}
    if args.steps is not None:
        overrides["train"] = {"max_steps": args.steps}
    if args.eval_lengths is not None:
        overrides["eval_lengths"] = args.eval_lengths
    task = dict(args.task_param or [])
    if args.task is not None:
        task["name"] = args.task
    if task:
        overrides["task"] = task
    return overrides


def _plan_run(args: argparse.Namespace) -> tuple[Any, Path]:
    from ssmbench.experiment.config import load_config
    from ssmbench.experiment.sweep import check_compatible, check_writable

    config = load_config(args.preset, args.config, _overrides(args))
    if config.executor == "ray":
        from ssmbench.experiment.executors.ray_cluster import check_address

        check_address(config.ray_address)
    else:
        from ssmbench.experiment.measure import resolve_device

        resolve_device(config.device)
    out = args.out or Path("runs") / config.preset
    check_writable(out)
    check_compatible(config, out, args.force)
    return config, out


def _store_at(out: Path) -> Any:
    from ssmbench.experiment.store import FILENAME, Store

    if not (out / FILENAME).is_file():
        raise ConfigError(f"no results in {out}: run `ssmbench run --out {out}` first")
    store = Store(out / FILENAME, readonly=True)
    if store.outdated:
        store.close()
        raise ConfigError(f"{out} holds results of an older ssmbench; rerun into another --out")
    return store


def _write_report(store: Any) -> Path:
    from ssmbench.experiment.sweep import report_meta
    from ssmbench.report import write_report

    with store:
        return write_report(
            store.rows(), store.curves(), report_meta(store), store.path.parent, store.costs()
        )


def _presets() -> None:
    from ssmbench.experiment.config import load_config

    for name in PRESETS:
        config = load_config(name)
        steps = sum(cell.train.max_steps for cell in config.cells())
        print(f"{name:<14} {config.description}")
        print(f"{'':<14} {len(config.cells())} cells, at most {steps:,} training steps; "
              f"{config.estimate or 'no estimate'}")  # fmt: skip


def validate_bench_args(args: argparse.Namespace) -> None:
    """Check `ssmbench bench`'s arguments before anything is built (ValueError says the fix)."""
    from ssmbench.experiment.bench import checked_tasks
    from ssmbench.experiment.measure import resolve_device
    from ssmbench.models import names

    checked_tasks(args.models or names(), args.lengths, args.n_tokens, 16, args.batch_size, 0,
                  args.repeats)  # fmt: skip
    resolve_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def run_bench_command(args: argparse.Namespace) -> None:
    """`ssmbench bench`: progress on stderr, then the tables (or the rows as JSON) on stdout."""
    import json

    from ssmbench.experiment.bench import bench, growth, study_ratios
    from ssmbench.models import names
    from ssmbench.report.bench import format_bench

    def progress(row: dict) -> None:
        cost = f"train {row['train_ms']:.2f} ms" if row["status"] == "done" else row["error"]
        print(f"{row['model']} at {row['seq_len']}: {row['status']}, {cost}", file=sys.stderr)

    rows = bench(
        args.models or names(),
        args.lengths,
        n_tokens=args.n_tokens,
        batch_size=args.batch_size,
        device=args.device,
        repeats=args.repeats,
        on_row=progress,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_bench(rows, study_ratios(rows), growth(rows)))


def _models() -> None:
    from ssmbench.models import build, n_params, names

    for name in names():
        print(f"{name:<18} {n_params(build(name, vocab_size=16)):>9,} parameters")


def _tasks() -> None:
    from ssmbench.tasks import names, parameters, task_class

    for name in names():
        cls = task_class(name)
        length = cls.model_fields["seq_len"].default
        usual = f"; usual length {length}" if isinstance(length, int) else ""
        print(f"{name:<24} {cls.summary} [{cls.source}{usual}]")
        for key, (default, description) in parameters(name).items():
            print(f"    {key:<20} {default!s:<8} {description}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            config, out = _plan_run(args)
        elif args.command in ("report", "export"):
            store = _store_at(args.out)
        elif args.command == "bench":
            validate_bench_args(args)
    except (ConfigError, ValueError) as e:
        print(f"ssmbench: error: {e}", file=sys.stderr)
        return 2

    if args.command == "models":
        _models()
    elif args.command == "tasks":
        _tasks()
    elif args.command == "presets":
        _presets()
    elif args.command == "run" and args.dry_run:
        from ssmbench.experiment.estimate import estimate, format_estimate

        sys.stdout.write(format_estimate(config, estimate(config)))
    elif args.command == "run":
        from ssmbench.experiment.sweep import run_sweep

        try:
            run_sweep(config, out, force=args.force)
        except KeyboardInterrupt:
            print(f"interrupted: rerun the same command to resume into {out}", file=sys.stderr)
            return 130
        print(f"report: {_write_report(_store_at(out))}")
    elif args.command == "report":
        print(f"report: {_write_report(store)}")
    elif args.command == "export":
        from ssmbench.report import export

        with store:
            sys.stdout.write(export(store.rows(), args.format, store.costs(), summary=args.summary))
    elif args.command == "bench":
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        run_bench_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
