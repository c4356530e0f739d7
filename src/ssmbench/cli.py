"""The `ssmbench` command: run, bench, report, export, export-data, models, presets, tasks, env.

Every bad input is caught here, at the edge, before anything is written: it exits with code 2
and one line on standard error that says what is wrong (at most LINE_LIMIT characters of it:
values echoed from the user's input may be megabytes).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, get_args

from ssmbench import runtime  # noqa: F401  first: sets OpenMP up before torch loads
from ssmbench.experiment.config import PRESETS, ConfigError, SinkName, clip, parse_yaml, shown
from ssmbench.files import ForeignFile, OutputError
from ssmbench.ops.scan import BACKENDS

EXIT_CODES = """exit codes:
  0    every cell finished (done)
  1    a cell failed, diverged or ran out of memory (the store and report are still written),
       or the output could not be written (closed pipe, full disk)
  2    bad input: nothing was started; one line on stderr says what to fix
  130  interrupted (Ctrl-C, or SIGTERM as schedulers send): rerun the same command to resume"""

LINE_LIMIT = 2_000  # characters of an error line: the user's values in it are clipped before
BAD_INPUT = (ConfigError, ForeignFile)  # exit 2 once the run has started: nothing written yet


def _error(message: str) -> None:
    """Print the one line of an error on stderr."""
    print(f"ssmbench: error: {clip(message, LINE_LIMIT)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        _error(f"{clip(message)} (see `{self.prog} --help`)")
        self.exit(2)


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help already says where it comes from."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is False and action.nargs == 0:
            return f"{text} (default: off)"
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssmbench")
    except PackageNotFoundError:
        return "unknown"


def _list_of(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {shown(text)}"
            ) from None

    return parse


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as YAML (16 -> int, 0.2 -> float, true -> bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {shown(text)}")
    try:
        return key.strip(), parse_yaml(value, f"the value of {shown(key.strip())}")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ssmbench", description=__doc__.splitlines()[0], epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"ssmbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_run(sub)
    _add_bench(sub)
    _add_store_readers(sub)
    sub.add_parser(
        "models", help="list the models: family, parameters, state size per layer, source"
    )
    sub.add_parser("presets", help="list the presets: description, cells, estimated cost")
    sub.add_parser("tasks", help="list the tasks with their parameters and defaults")
    _add_export_data(sub)
    sub.add_parser(
        "env", help="print the environment every result records (versions, CPU, GPU), to paste "
        "into a bug report",
    )  # fmt: skip
    return parser


def _add_run(sub: Any) -> None:
    """`run`: what to train (the rest: how and where, in _add_run_options)."""
    run = sub.add_parser(
        "run",
        help="train every model × task × length × lr × wd × seed, measure costs, report",
        epilog=EXIT_CODES,
    )
    run.add_argument(
        "--preset",
        help=f"one of {', '.join(PRESETS)} (default: the config file's preset:, else quick)",
    )
    run.add_argument("--config", type=Path, help="YAML file overriding the preset (default: none)")
    run.add_argument(
        "--models",
        type=_list_of(str, "model names"),
        help="comma-separated models (default: the preset's; see `ssmbench models`)",
    )
    run.add_argument(
        "--lengths",
        type=_list_of(int, "integers"),
        help="comma-separated sequence lengths (default: the preset's)",
    )
    run.add_argument(
        "--seeds", type=_list_of(int, "integers"), help="comma-separated seeds (default: 0)"
    )
    run.add_argument(
        "--lrs",
        type=_list_of(float, "numbers"),
        help="learning rates to sweep (default: the preset's)",
    )
    run.add_argument(
        "--weight-decays",
        type=_list_of(float, "numbers"),
        help="weight decays to sweep (default: the preset's)",
    )
    run.add_argument(
        "--d-models",
        type=_list_of(int, "integers"),
        help="model widths to sweep; ids then carry the width, e.g. mamba-s6@d128 "
        "(default: arch.d_model alone)",
    )
    run.add_argument(
        "--steps", type=int, help="maximum training steps per cell (default: the preset's)"
    )
    _add_task_options(run, "the preset's", "the preset's task parameters")
    run.add_argument(
        "--eval-lengths",
        type=_list_of(int, "integers"),
        help="lengths the best weights are tested at after training (training length "
        "always included; default: the preset's, else the training length only)",
    )
    _add_run_options(run)


def _add_task_options(parser: argparse.ArgumentParser, task: str, params: str) -> None:
    """--task and --task-param, read the same way by `run` and `bench`."""
    parser.add_argument("--task", help=f"the task (see `ssmbench tasks`; default: {task})")
    parser.add_argument(
        "--task-param",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="a task parameter (repeatable), e.g. --task-param num_kv_pairs=16 "
        f"(default: {params})",
    )


def _task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The task section that --task and --task-param ask for ({} when neither is given)."""
    task = dict(args.task_param or [])
    if args.task is not None:
        task["name"] = args.task
    return task


def _add_run_options(run: argparse.ArgumentParser) -> None:
    """How and where `run` trains: device, kernels, threads, executors, logging, output."""
    run.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="(default: the preset's, else auto)"
    )
    run.add_argument("--scan", choices=BACKENDS, help="selective-scan backend (default: auto)")
    run.add_argument("--threads", type=int, help="torch threads per cell (default: cores/workers)")
    run.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile each model for training and cost; compile time is recorded apart as "
        "compile_s (default: the preset's, else off: slower on a 2-core CPU)",
    )
    run.add_argument(
        "--plugins",
        type=_list_of(str, "module names"),
        help="modules to import first; they may register more models (default: none)",
    )
    _add_executor_options(run)
    run.add_argument(
        "--log", action="append", choices=get_args(SinkName),
        help="also log every cell to TensorBoard (OUT/tb) or W&B (OUT/wandb; WANDB_MODE=offline "
        "keeps it on this machine); repeatable (default: neither)",
    )  # fmt: skip
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
    run.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="start even if the largest cell's estimated memory exceeds what is free",
    )
    run.add_argument(
        "--log-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when stderr is not a terminal, a progress line per running cell at most this often",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="if another run is writing --out, wait for it instead of exiting with code 2",
    )


def _add_executor_options(run: argparse.ArgumentParser) -> None:
    """Where the cells run: locally, on Ray or on SLURM."""
    run.add_argument("--executor", choices=["local", "ray", "slurm"], help="(default: local)")
    run.add_argument("--workers", type=int, help="cells at once, local executor (default: 1)")
    run.add_argument(
        "--ray-address",
        help="auto or HOST:PORT of a running Ray cluster (default: start a local one)",
    )
    run.add_argument("--ray-num-cpus", type=float, help="CPUs per cell on Ray (default 1)")
    run.add_argument("--ray-num-gpus", type=float, help="GPUs per CUDA cell on Ray (default 1)")
    run.add_argument(
        "--retries", type=int, help="Ray or SLURM retries of a cell whose worker died (default 0)"
    )
    _add_slurm_options(run)


def _add_slurm_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--slurm-partition", help="partition of every SLURM job (default: the cluster's)"
    )
    run.add_argument(
        "--slurm-gpus", type=int, help="GPUs per SLURM job (default: 1 for CUDA cells, else 0)"
    )
    run.add_argument(
        "--slurm-time", type=int, metavar="MINUTES",
        help="time limit of a SLURM job: a job about to run out checkpoints and is requeued "
        "(default 240)",
    )  # fmt: skip
    run.add_argument(
        "--slurm-extra", action="append", type=_sbatch_flags, metavar="FLAGS",
        help="more sbatch flags, comma-separated and repeatable: --slurm-extra=--account=abc,"
        "--qos=high or --slurm-extra account=abc (a comma inside a value, as in "
        "--exclude=n1,n2, stays in it; default: none)",
    )  # fmt: skip


def _sbatch_flags(text: str) -> list[str]:
    """Comma-separated sbatch flags: a comma starts a new one only before `--name` or `name=`."""
    return [flag for flag in re.split(r",(?=--[A-Za-z]|[A-Za-z][\w-]*=)", text) if flag]


def _add_export_data(sub: Any) -> None:
    data = sub.add_parser(
        "export-data",
        help="write a task's fixed validation and test sets as Parquet or JSON Lines (for "
        "Hugging Face datasets), with the task's parameters and a fingerprint",
    )
    data.add_argument("task", help="the task (see `ssmbench tasks`)")
    data.add_argument(
        "--param", action="append", type=_key_value, metavar="KEY=VALUE",
        help="a task parameter (repeatable), e.g. --param n_tokens=16 (default: the task's own)",
    )  # fmt: skip
    data.add_argument("--seq-len", type=int, help="(default: the task's usual length)")
    data.add_argument("--val-size", type=int, help="validation examples (default: the trainer's)")
    data.add_argument("--test-size", type=int, help="test examples (default: the trainer's)")
    data.add_argument(
        "--train-examples", type=int, metavar="N",
        help="also the first N training examples a run of --seed draws in batches of "
        "--batch-size (not the task parameter train_examples; default: none)",
    )  # fmt: skip
    data.add_argument("--seed", type=int, default=0, help="training seed, for --train-examples")
    data.add_argument(
        "--batch-size", type=int, help="training batch size, for --train-examples (default: the "
        "trainer's)",
    )  # fmt: skip
    data.add_argument(
        "--format", choices=["parquet", "jsonl"],
        help="(default: jsonl for a .jsonl or .json file, else parquet)",
    )  # fmt: skip
    data.add_argument(
        "-o", "--output", type=Path, required=True, help="the file to write (required: no default)"
    )
    data.add_argument("--force", action="store_true", help="replace an existing file")


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser("bench", help="time, memory and utilization only, no training")
    bench.add_argument("--models", type=_list_of(str, "model names"), help="(default: every model)")
    bench.add_argument(
        "--lengths",
        type=_list_of(int, "integers"),
        default=[256, 512, 784],
        help="comma-separated sequence lengths (default: 256,512,784)",
    )
    _add_task_options(bench, "selective-copy", "the task's own")
    bench.add_argument(
        "--n-tokens", type=int, help="tokens to copy: --task-param n_tokens=N (default: 16)"
    )
    bench.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device")
    bench.add_argument("--repeats", type=int, default=20, help="timed repeats per model")
    bench.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    bench.add_argument(
        "--compile", choices=["off", "on", "both"], default="off",
        help="torch.compile the models; 'both' measures eager and compiled side by side",
    )  # fmt: skip
    bench.add_argument(
        "--decode", action="store_true",
        help="time recurrent decoding instead: tokens/s and memory of generating --new-tokens "
        "after prompts of --lengths tokens, at each of --decode-batches",
    )  # fmt: skip
    bench.add_argument("--new-tokens", type=int, default=32, help="tokens generated (--decode)")
    bench.add_argument(
        "--decode-batches", type=_list_of(int, "integers"), default=[1, 8, 64],
        help="comma-separated batch sizes for --decode (default: 1,8,64)",
    )  # fmt: skip
    bench.add_argument(
        "--profile", action="store_true",
        help="also profile each model's training step: time by module group and by op",
    )  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print JSON rows instead of tables")


def _add_store_readers(sub: Any) -> None:
    report = sub.add_parser("report", help="redraw report.md and the plots from a store")
    report.add_argument("out", type=Path, help="folder holding results.sqlite (read only)")
    report.add_argument(
        "--to", type=Path, help="write report.md and img/ here (default: the store's folder)"
    )

    export = sub.add_parser("export", help="print a store's results as csv, json or md")
    export.add_argument("out", type=Path, help="folder holding results.sqlite (read only)")
    export.add_argument(
        "--format", choices=["csv", "json", "md"], default="json", help="output format"
    )
    export.add_argument(
        "--summary",
        action="store_true",
        help="one row per model × task setting × length: chosen lr, mean, std, 95%% CI, costs",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flat = {
        "models": args.models,
        "lengths": args.lengths,
        "seeds": args.seeds,
        "lrs": args.lrs,
        "weight_decays": args.weight_decays,
        "d_models": args.d_models,
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
        "compile": args.compile,
        "log": args.log,
        "slurm_partition": args.slurm_partition,
        "slurm_gpus": args.slurm_gpus,
        "slurm_time": args.slurm_time,
        "slurm_extra": sum(args.slurm_extra, []) if args.slurm_extra else None,
    }
    overrides = {k: v for k, v in flat.items() if v is not None}
    if args.steps is not None:
        overrides["train"] = {"max_steps": args.steps}
    if args.eval_lengths is not None:
        overrides["eval_lengths"] = args.eval_lengths
    task = _task_overrides(args)
    if task:
        overrides["task"] = task
    return overrides


def _plan_run(args: argparse.Namespace) -> tuple[Any, Path]:
    from ssmbench.experiment.config import load_config
    from ssmbench.experiment.sweep import (
        check_compatible,
        check_not_a_checkout,
        check_own_files,
        check_writable,
    )

    config = _with_usable_sinks(load_config(args.preset, args.config, _overrides(args)))
    if config.executor == "ray":
        from ssmbench.experiment.executors.ray_cluster import check_address

        check_address(config.ray_address)
    elif config.executor == "slurm":
        _check_slurm()
    else:
        _check_local_fit(config, args.skip_memory_check, args.dry_run)
    out = args.out or Path("runs") / config.preset
    check_writable(out)
    check_not_a_checkout(out, args.force)
    check_own_files(out)
    check_compatible(config, out, args.force)
    return config, out


def _with_usable_sinks(config: Any) -> Any:
    """The config without the logging sinks whose package is missing, each said in one line."""
    from ssmbench.experiment.sinks import usable

    config, warnings = usable(config)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return config


def _check_slurm() -> None:
    """ConfigError unless submitit imports and a SLURM cluster takes jobs here."""
    try:
        from ssmbench.experiment.executors.slurm import check_cluster
    except ModuleNotFoundError as e:
        if e.name != "submitit":
            raise
        raise ConfigError(
            '--executor slurm needs submitit: pip install "ssmbench[slurm]"'
        ) from None
    check_cluster()


def _check_local_fit(config: Any, skip_memory_check: bool, dry_run: bool = False) -> None:
    """Device, scan backend, memory and threads of a local sweep, before any cell starts (a
    dry run on a machine without the config's device only lists the cells)."""
    from ssmbench.experiment.measure import resolve_device
    from ssmbench.experiment.preflight import check_memory, check_scan, scan_note, threads_note

    try:
        device = resolve_device(config.device)
    except ValueError:
        if dry_run:
            return
        raise
    check_scan(config, device)
    if not skip_memory_check:
        check_memory(config, device)
    for note in (scan_note(config, device), threads_note(config)):
        if note:
            print(note, file=sys.stderr)


def _run(args: argparse.Namespace, config: Any, out: Path) -> int:
    """Run the sweep: 0 if every cell is done, 1 if any failed, diverged or ran out of memory."""
    from ssmbench.experiment.sweep import run_sweep, unfinished_cells

    try:
        run_sweep(config, out, force=args.force, wait=args.wait, log_every=args.log_every)
        report = _write_report(_store_at(out))
    except BAD_INPUT as e:  # another run holds the folder, a link stands where a file belongs
        _error(str(e))
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: checkpoints saved, workers stopped
        print(f"interrupted: rerun the same command to resume into {out}", file=sys.stderr)
        return 130
    print(f"report: {report}")
    unfinished = unfinished_cells(config, out)
    if unfinished:
        total = len(config.cells())
        print(f"{len(unfinished)} of {total} cells did not finish: see {report}", file=sys.stderr)
        return 1
    return 0


def _store_at(out: Path) -> Any:
    from ssmbench.experiment.store import FILENAME, Store

    if not (out / FILENAME).exists():
        raise ConfigError(f"no results in {out}: run `ssmbench run --out {out}` first")
    store = Store(out / FILENAME, readonly=True)
    if store.outdated:
        store.close()
        raise ConfigError(f"{out} holds results of an older ssmbench; rerun into another --out")
    return store


def _write_report(store: Any, to: Path | None = None) -> Path:
    """report.md and img/ in `to` (default: the store's folder), from the store read only."""
    from ssmbench.experiment.sweep import report_meta
    from ssmbench.report import write_report

    with store:
        rows, curves, costs = store.rows(), store.curves(), store.costs()
        meta = report_meta(store)
    return write_report(rows, curves, meta, to or store.path.parent, costs)


def _write_out(args: argparse.Namespace, store: Any) -> int:
    """report (files in --to or the store's folder) or export (stdout); the store is only read."""
    if args.command == "export":
        from ssmbench.report import export

        with store:
            try:
                text = export(store.rows(), args.format, store.costs(), summary=args.summary)
            except ValueError as e:  # e.g. a non-finite number, which JSON cannot hold
                _error(f"cannot export {args.out} as {args.format}: {e}; try --format csv")
                return 2
        sys.stdout.write(text)
        return 0
    to = args.to or args.out
    hint = "choose another --to" if args.to else "add --to DIR to write it elsewhere"
    try:
        path = _write_report(store, to)
    except ForeignFile as e:
        _error(f"{e}; or {hint}")
        return 2
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        reason = os.strerror(e.errno)
        _error(f"cannot write in {to} ({reason}): {hint}")
        return 2
    print(f"report: {path}")
    return 0


def _presets() -> None:
    from ssmbench.experiment.config import load_config

    for name in PRESETS:
        config = load_config(name)
        steps = sum(cell.train.max_steps for cell in config.cells())
        print(f"{name:<14} {config.description}")
        print(f"{'':<14} {len(config.cells())} cells, at most {steps:,} training steps; "
              f"{config.estimate or 'no estimate'}")  # fmt: skip


def bench_task(args: argparse.Namespace) -> Any:
    """The task section `ssmbench bench` times: --task, --task-param and --n-tokens over
    selective copying's defaults (ValueError in one line when a parameter is bad)."""
    from ssmbench.experiment.bench import task_section

    task = _task_overrides(args)
    if args.n_tokens is not None:
        task["n_tokens"] = args.n_tokens
    return task_section(**task)


def validate_bench_args(args: argparse.Namespace) -> None:
    """Check `ssmbench bench`'s arguments before anything is built (ValueError says the fix)."""
    from ssmbench.experiment.bench import checked_tasks
    from ssmbench.experiment.measure import resolve_device
    from ssmbench.models import names

    checked_tasks(args.models or names(), args.lengths, bench_task(args), args.batch_size, 0,
                  args.repeats)  # fmt: skip
    resolve_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def run_bench_command(args: argparse.Namespace) -> None:
    """`ssmbench bench`: progress on stderr, then the tables (or the rows as JSON) on stdout."""
    import json

    from ssmbench.experiment.bench import COMPILE_MODES, bench, growth, study_ratios
    from ssmbench.models import names
    from ssmbench.report.bench import format_bench

    def progress(row: dict) -> None:
        cost = f"train {row['train_ms']:.2f} ms" if row["status"] == "done" else row["error"]
        print(f"{row['model']} at {row['seq_len']}: {row['status']}, {cost}", file=sys.stderr)

    if args.decode:
        from ssmbench.experiment.decode import decode_bench
        from ssmbench.report.bench import format_decode

        rows = decode_bench(args.models or names(), args.decode_batches, args.lengths,
                            args.new_tokens, device=args.device)  # fmt: skip
        print(json.dumps(rows, indent=2) if args.json else format_decode(rows))
        return
    rows = bench(
        args.models or names(),
        args.lengths,
        task=bench_task(args),
        batch_size=args.batch_size,
        device=args.device,
        repeats=args.repeats,
        on_row=progress,
        compile_modes=COMPILE_MODES[getattr(args, "compile", "off")],
        profile=args.profile,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_bench(rows, study_ratios(rows), growth(rows)))


def _models() -> None:
    """Every registered model at the default width (d_model 64, d_state 16, 2 layers, vocab 16,
    long filters built for L = 1024): its parameters, those of one layer's mixers (what upstream
    counts per layer: no norms, embedding or head) and its state."""
    from ssmbench.models import MODELS, build, n_params

    L = 1024
    print(f"{'model':<18} {'family':<17} {'parameters':>10} {'per layer':>10} "
          f"{f'state (L={L})':>14}  source")  # fmt: skip
    for name, spec in MODELS.items():
        params = n_params(build(name, vocab_size=16))
        layer = sum(n_params(m) for m in spec.make_layers(64, 16))
        state = spec.state(64, 16, L)
        print(f"{name:<18} {spec.family:<17} {params:>10,} {layer:>10,} {state:>14,}  "
              f"{spec.reference}")  # fmt: skip


def _tasks() -> None:
    from ssmbench.tasks import names, parameters, task_class

    for name in names():
        cls = task_class(name)
        length = cls.model_fields["seq_len"].default
        usual = f"; usual length {length}" if isinstance(length, int) else ""
        print(f"{name:<24} {cls.summary} [{cls.source}{usual}]")
        for key, (default, description) in parameters(name).items():
            print(f"    {key:<20} {default!s:<8} {description}")


def _export_data(args: argparse.Namespace) -> int:
    """`ssmbench export-data`: 0 with the file written, 2 (one line, nothing written) if not."""
    from ssmbench.experiment.export_data import export

    try:
        exported = export(
            args.output, args.format, args.force, args.task, params=dict(args.param or []),
            seq_len=args.seq_len, val_size=args.val_size, test_size=args.test_size,
            train_rows=args.train_examples, seed=args.seed, batch_size=args.batch_size,
        )  # fmt: skip
    except (ConfigError, ValueError) as e:
        _error(str(e))
        return 2
    counts = ", ".join(f"{len(x)} {name}" for name, (x, _) in exported.splits.items())
    print(f"{args.output}: {counts} ({exported.meta['task_key']}, fingerprint "
          f"{exported.meta['fingerprint']})")  # fmt: skip
    return 0


def _env() -> None:
    """The record every result stores, on the device `auto` picks, as a block to paste."""
    from ssmbench.experiment.measure import environment, resolve_device

    record = environment(resolve_device("auto"))
    width = max(map(len, record))
    lines = [
        f"{key:<{width}}  {'none' if value is None else value}" for key, value in record.items()
    ]
    print("```text\n" + "\n".join(lines) + "\n```")


def main(argv: list[str] | None = None) -> int:
    """Run a command; an unwritable output (closed pipe, full disk) ends with one line, code 1:
    the file, the reason and the space left (OutputError), else where and why."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not at interpreter exit
        return code
    except OSError as e:  # EPIPE, ENOSPC, EIO, EDQUOT...: the results in the store are safe
        _silence_stdout()
        where = e.filename or "standard output"
        _error(str(e) if isinstance(e, OutputError) else f"{where}: {e.strerror or e}")
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit does not fail again flushing it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            config, out = _plan_run(args)
        elif args.command in ("report", "export"):
            store = _store_at(args.out)
        elif args.command == "bench":
            validate_bench_args(args)
    except (ConfigError, ValueError) as e:
        _error(str(e))
        return 2

    if args.command == "export-data":
        return _export_data(args)
    if args.command == "models":
        _models()
    elif args.command == "env":
        _env()
    elif args.command == "tasks":
        _tasks()
    elif args.command == "presets":
        _presets()
    elif args.command == "run" and args.dry_run:
        from ssmbench.experiment.estimate import dry_run

        sys.stdout.write(dry_run(config))
    elif args.command == "run":
        return _run(args, config, out)
    elif args.command in ("report", "export"):
        return _write_out(args, store)
    elif args.command == "bench":
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        run_bench_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
