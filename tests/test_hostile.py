"""Hostile use: two writers on one folder, damaged stores and checkpoints, markup in messages.

Every case asserts the exit code, one line on stderr, and that the store and every finished
result are byte-for-byte unchanged."""

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from ssmbench.cli import main
from ssmbench.experiment.config import load_config
from ssmbench.experiment.lock import LOCKFILE, folder_lock
from ssmbench.experiment.results import CellResult, Status
from ssmbench.experiment.store import FILENAME, Store

SMOKE = ["run", "--preset", "smoke", "--models", "lstm", "--lengths", "8"]


def snapshot(folder: Path) -> dict[str, str]:
    """Hash of every file but the lock file (which only ever holds a PID)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCKFILE
    }


def one_line(capsys, code_expected: int, code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == code_expected, captured.err
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def finished(tmp_path):
    """A folder whose store holds one finished (done) cell of the smoke lstm config."""
    out = tmp_path / "finished"
    out.mkdir()
    config = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]})
    cell = config.cells()[0]
    with Store(out / FILENAME) as store:
        store.set_meta(fingerprint=config.fingerprint(), preset="smoke", config=config.model_dump())
        store.mark_running(cell)
        store.finish(
            cell.id,
            CellResult(
                Status.DONE,
                metrics={"accuracy": 0.75, "steps": 40},
                curve=[{"step": 10, "train_loss": 1.0, "val_accuracy": 0.5, "elapsed_s": 0.1}],
            ),
        )
    return out


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(finished, capsys):
    before = snapshot(finished)
    with folder_lock(finished):
        line = one_line(capsys, 2, main([*SMOKE, "--out", str(finished)]))
    assert f"PID {os.getpid()}" in line and "--wait" in line
    assert snapshot(finished) == before


def test_wait_blocks_until_the_holder_ends(tmp_path):
    entered = threading.Event()

    def second() -> None:
        with folder_lock(tmp_path, wait=True):
            entered.set()

    with folder_lock(tmp_path):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.5), "entered while the folder was held"
    waiter.join(timeout=30)
    assert entered.is_set()


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    import subprocess

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ssmbench.experiment.lock import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    from ssmbench.experiment.config import ConfigError

    with pytest.raises(ConfigError, match=f"PID {holder.pid}"), folder_lock(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with folder_lock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_a_finished_result_is_never_reset_by_a_restart(finished):
    before = snapshot(finished)
    config = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]})
    cell = config.cells()[0]
    with Store(finished / FILENAME) as store:
        row = store.rows()[0]
        store.mark_running(cell)  # a second run starting the same cell
        store.finish(cell.id, CellResult(Status.FAILED, error="killed"))
        assert store.rows() == [row] and store.status(cell.id) == Status.DONE
    with Store(finished / FILENAME) as store:
        store.clear()  # what --force does
        store.mark_running(cell)
        assert store.status(cell.id) == Status.RUNNING
    assert snapshot(finished) != before


@pytest.mark.slow
def test_two_runs_started_together_one_runs_the_other_exits_2(tmp_path):
    import subprocess

    command = ["ssmbench", "run", "--preset", "smoke", "--models", "lstm", "--lengths", "16",
               "--out", str(tmp_path / "out")]  # fmt: skip
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [r.communicate(timeout=600)[1] for r in runs]  # reads stderr as it comes
    results = [(r.pid, r.returncode, err) for r, err in zip(runs, errors, strict=True)]
    assert sorted(code for _, code, _ in results) == [0, 2], results
    (winner, _, _), (_, _, refused) = sorted(results, key=lambda r: r[1])
    assert refused.count("\n") == 1 and f"PID {winner}" in refused
    with Store(tmp_path / "out" / FILENAME, readonly=True) as store:
        assert {r["status"] for r in store.rows()} == {"done"}
        assert all(r["attempts"] == 1 for r in store.rows())


KILLED_MID_COMMIT = """
import os, signal, sys
from ssmbench.experiment.store import Store
store = Store(sys.argv[1])
store.db.execute("PRAGMA cache_size = 1")  # spill changed pages into the file before commit
store.db.execute("BEGIN")
store.db.execute("UPDATE cells SET status = 'failed', metrics = NULL, error = ?", ("x" * 9000,))
store.db.execute("UPDATE curves SET train_loss = -1")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_store_killed_mid_commit_is_read_whole_and_left_untouched(finished, capsys):
    import subprocess

    export_before = main(["export", str(finished)]), capsys.readouterr().out
    path = finished / FILENAME
    clean = path.read_bytes()
    subprocess.run([sys.executable, "-c", KILLED_MID_COMMIT, str(path)], check=False)
    journal = finished / (FILENAME + "-journal")
    assert journal.stat().st_size > 0 and path.read_bytes() != clean, "no hot journal made"
    before = snapshot(finished)
    assert (main(["export", str(finished)]), capsys.readouterr().out) == export_before
    assert main(["report", str(finished)]) == 0
    assert "Failed" not in (finished / "report.md").read_text()
    after = snapshot(finished)
    assert {k: after[k] for k in before} == before, "readers never modify the store"
    with Store(path) as store:  # a writer rolls the journal back in place
        assert [r["status"] for r in store.rows()] == ["done"]
    assert not journal.exists() and json.loads(export_before[1])[0]["accuracy"] == 0.75


def test_a_reader_beside_a_live_writer_reads_the_committed_store(finished, capsys):
    """A live writer's journal is not hot: readers read the store itself, never a stale copy."""
    export_before = main(["export", str(finished)]), capsys.readouterr().out
    with Store(finished / FILENAME) as writer:
        writer.db.execute("BEGIN IMMEDIATE")  # a commit under way: its journal is on disk
        writer.db.execute("UPDATE cells SET error = 'uncommitted'")
        assert (finished / (FILENAME + "-journal")).exists()
        with Store(finished / FILENAME, readonly=True) as reader:
            assert reader._scratch is None, "a live writer's journal was taken for a hot one"
            assert [r["error"] for r in reader.rows()] == [None]
        assert (main(["export", str(finished)]), capsys.readouterr().out) == export_before
        writer.db.rollback()


def _garbage_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096 : 2 * 4096] = b"\xa5" * 4096  # page 2: a b-tree page no longer
    path.write_bytes(bytes(data))


def _folder_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


DAMAGED_STORES = {
    "truncated": (lambda p: os.truncate(p, p.stat().st_size // 2), "damaged"),
    "garbage page": (_garbage_page, "damaged"),
    "garbage header": (lambda p: p.write_bytes(b"\x00" * 100 + p.read_bytes()[100:]), "damaged"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(8192)), "damaged"),
    "empty tables": (lambda p: p.write_bytes(b""), "no ssmbench tables"),
    "a folder in its place": (_folder_in_its_place, "is a folder"),
}


@pytest.mark.parametrize("damage", list(DAMAGED_STORES))
@pytest.mark.parametrize("command", ["report", "export", "run"])
def test_a_damaged_store_gives_one_line_and_exit_2(finished, damage, command, capsys):
    hurt, expected = DAMAGED_STORES[damage]
    hurt(finished / FILENAME)
    before = snapshot(finished)
    argv = [*SMOKE, "--out", str(finished)] if command == "run" else [command, str(finished)]
    line = one_line(capsys, 2, main(argv))
    assert line.startswith("ssmbench: error:") and expected in line
    assert "ssmbench run --force" in line and "Traceback" not in line
    assert snapshot(finished) == before


def test_force_sets_a_damaged_store_aside_and_starts_a_new_one(finished, capsys):
    _garbage_page(finished / FILENAME)
    damaged = (finished / FILENAME).read_bytes()
    assert main([*SMOKE, "--steps", "10", "--out", str(finished), "--force"]) == 0
    err = capsys.readouterr().err
    assert "moved to results.sqlite.corrupt" in err
    assert (finished / (FILENAME + ".corrupt")).read_bytes() == damaged
    with Store(finished / FILENAME, readonly=True) as store:
        assert [(r["status"], r["steps"]) for r in store.rows()] == [("done", 10)]


@pytest.fixture
def markup():
    """The markup-laden error text of tests/faulty_models.py (conftest unregisters its models)."""
    from faulty_models import MARKUP

    return MARKUP


def _display_output(terminal: bool, text: str) -> str:
    import io

    from rich.console import Console

    from ssmbench.experiment.progress import SweepDisplay

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=60)
    cell = f"model{text}/L8"
    with SweepDisplay(total=1, console=console, log_every=0.0) as display:
        display.event("start", cell, None)
        display.event("progress", cell, {"warning": text})
        point = {"step": 1, "max_steps": 2, "train_loss": 1.0, "val_accuracy": 0.5}
        display.event("progress", cell, point)
        display.event("result", cell, CellResult(Status.FAILED, error=f"RuntimeError: {text}"))
    return buffer.getvalue()


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_markup_in_messages_prints_as_plain_text(terminal, markup):
    MARKUP = markup
    output = _display_output(terminal, MARKUP)
    assert f"model{MARKUP}/L8: warning: {MARKUP}" in output
    assert f"model{MARKUP}/L8: failed — RuntimeError: {MARKUP}" in output
    if not terminal:  # one line per event, never wrapped at the console's width
        assert f"model{MARKUP}/L8: started" in output and "step 1/2" in output
        assert all(len(line) > 60 for line in output.splitlines())


def test_markup_in_a_cell_failure_reaches_store_and_report_intact(tmp_path, capsys, markup):
    MARKUP = markup
    argv = ["run", "--preset", "smoke", "--models", "fault-markup", "--lengths", "8"]
    code = main([*argv, "--plugins", "faulty_models", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and f"failed — RuntimeError: {MARKUP}" in err
    with Store(tmp_path / FILENAME, readonly=True) as store:
        assert MARKUP in store.rows()[0]["error"]
    assert MARKUP.replace("|", "\\|") in (tmp_path / "report.md").read_text()
    assert main(["export", str(tmp_path), "--format", "json"]) == 0
    assert MARKUP in json.loads(capsys.readouterr().out)[0]["error"]


def test_warnings_and_errors_of_the_cli_are_plain_text(tmp_path, capsys, markup):
    MARKUP = markup
    assert main(["run", "--models", MARKUP, "--out", str(tmp_path / "o")]) == 2
    assert MARKUP in capsys.readouterr().err


HOSTILE_INPUT = {
    "infinite lr": ("train:\n  lr: .inf\n", "train.lr: Input should be a finite number"),
    "infinite weight decay": ("train:\n  weight_decay: .inf\n", "train.weight_decay"),
    "nan lr": ("train:\n  lr: .nan\n", "train.lr"),
    "infinite time budget": ("train:\n  time_budget_s: .inf\n", "train.time_budget_s"),
    "infinite grad clip": ("train:\n  grad_clip: .inf\n", "train.grad_clip"),
    "infinite ray cpus": ("ray_num_cpus: .inf\n", "ray_num_cpus"),
    "length beyond int64": (["--lengths", "99999999999999999999"], "64-bit integer"),
    "steps beyond int64": (["--steps", str(2**63)], "64-bit integer"),
    "batch beyond int64": ("train:\n  batch_size: 9223372036854775808\n", "64-bit integer"),
    "seed beyond int64": (["--seeds", str(2**64)], "64-bit integer"),
    "length beyond memory": (["--lengths", "100000000"], "--skip-memory-check"),
    "batch beyond memory": ("train:\n  batch_size: 100000000\n", "GiB free"),
    "cuda scan on cpu": (["--scan", "cuda"], "--scan cuda"),
    "unknown yaml preset": ("preset: huge\n", "unknown preset 'huge'"),
    "yaml preset against --preset": ("preset: quick\n", "keep one of them"),
    "threads zero": (["--threads", "0"], "threads"),
    "workers zero": (["--workers", "0"], "workers"),
    "empty model list": (["--models", ","], "models"),
    "markup in model name": (["--models", "[bold]x[/x]"], "unknown model [bold]x[/x]"),
}


@pytest.mark.parametrize("case", list(HOSTILE_INPUT))
def test_hostile_input_exits_2_with_one_line_and_touches_nothing(
    case, finished, tmp_path, capsys, monkeypatch
):
    args, expected = HOSTILE_INPUT[case]
    if isinstance(args, str):
        (tmp_path / "config.yaml").write_text(args)
        args = ["--config", str(tmp_path / "config.yaml")]
    monkeypatch.chdir(tmp_path)
    before = snapshot(finished)
    for out in (tmp_path / "fresh", finished):
        line = one_line(capsys, 2, main([*SMOKE, *args, "--out", str(out)]))
        assert line.startswith("ssmbench: error:") and expected in line, line
    assert not (tmp_path / "fresh").exists(), "nothing written"
    assert snapshot(finished) == before


def test_a_yaml_preset_is_applied_not_just_a_label(tmp_path):
    from ssmbench.experiment.config import load_config

    (tmp_path / "c.yaml").write_text("preset: smoke\ntrain:\n  lr: 0.01\n")
    config = load_config(None, tmp_path / "c.yaml")
    smoke = load_config("smoke")
    assert config.preset == "smoke" and config.models == smoke.models
    assert config.arch == smoke.arch and config.train.max_steps == smoke.train.max_steps
    assert config.train.lr == 0.01
    assert load_config("smoke", tmp_path / "c.yaml").train.lr == 0.01  # same preset: fine


def test_repeated_models_lengths_and_seeds_run_once_with_a_note(capsys):
    from ssmbench.experiment.config import load_config

    overrides = {"models": ["lstm", "lstm"], "lengths": [8, 16, 8], "seeds": [1, 1, 0]}
    config = load_config("smoke", overrides=overrides)
    assert (config.models, config.lengths, config.seeds) == (["lstm"], [8, 16], [1, 0])
    assert len({c.id for c in config.cells()}) == len(config.cells()) == 4
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 3 and all(n.startswith("note: repeated") for n in notes)


def test_too_many_threads_is_warned_about(monkeypatch):
    from ssmbench.experiment.config import load_config
    from ssmbench.experiment.preflight import threads_note

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert threads_note(load_config("smoke", overrides={"threads": 2})) is None
    note = threads_note(load_config("smoke", overrides={"threads": 3}))
    assert note is not None and "2 cores" in note
    assert "2 cores" in threads_note(load_config("smoke", overrides={"threads": 2, "workers": 2}))


def test_a_missing_fused_scan_is_warned_about(monkeypatch):
    import torch

    from ssmbench.experiment.config import load_config
    from ssmbench.experiment.preflight import scan_note
    from ssmbench.ops import scan_fused

    cpu, config = torch.device("cpu"), load_config("smoke")
    assert scan_note(config, cpu) is None  # it builds here
    monkeypatch.setattr(scan_fused, "available", lambda: False)
    monkeypatch.setattr(scan_fused, "why_unavailable", lambda: "no C++ compiler found: install g++")
    note = scan_note(config, cpu)
    assert note is not None and "no C++ compiler found" in note and "torch-sequential" in note
    assert scan_note(load_config("smoke", overrides={"scan": "torch"}), cpu) is None  # asked for


def test_version_and_every_option_shows_its_default(capsys):
    import argparse

    from ssmbench.cli import _parser

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("ssmbench ")
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.dest != "help" and action.option_strings:
                assert action.help, (name, action.dest)
                help_line = sub._get_formatter()._get_help_string(action)
                assert "default" in help_line, (name, action.dest, help_line)
        if name == "run":
            assert "exit codes:" in text and "130" in text


class _Unwritable:
    def __init__(self, error: OSError) -> None:
        self.error = error

    def write(self, text: str) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error

    def fileno(self) -> int:
        raise ValueError("no file")


@pytest.mark.parametrize(
    "error",
    [BrokenPipeError(32, "Broken pipe"), OSError(28, "No space left on device")],
    ids=["closed pipe", "full disk"],
)
@pytest.mark.parametrize("command", ["export", "models"])
def test_an_unwritable_stdout_ends_with_one_line(finished, error, command, capsys, monkeypatch):
    before = snapshot(finished)
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _Unwritable(error))
    code = main(["export", str(finished)] if command == "export" else ["models"])
    monkeypatch.undo()
    line = one_line(capsys, 1, code)
    assert line == f"ssmbench: error: standard output: {error.strerror}"
    assert snapshot(finished) == before


def test_report_into_a_read_only_folder_says_so_and_takes_to(finished, tmp_path, capsys):
    before = snapshot(finished)
    line = one_line(capsys, 2, main(["report", str(finished), "--to", "/sys/ssmbench-report"]))
    assert "cannot write in /sys/ssmbench-report" in line and "another --to" in line
    assert main(["report", str(finished), "--to", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists()
    assert snapshot(finished) == before  # nothing written beside the store


def test_out_inside_a_git_checkout_is_refused_unless_forced(tmp_path, capsys, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "README.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    line = one_line(capsys, 2, main([*SMOKE, "--out", "."]))
    assert "git checkout" in line and "--force" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "README.md"]
    from ssmbench.experiment.sweep import check_not_a_checkout

    check_not_a_checkout(tmp_path, force=True)
    check_not_a_checkout(tmp_path / "runs" / "new", force=False)  # a new folder is fine


@pytest.fixture
def not_ray():
    """A TCP server that accepts and answers like a web server, and one that never answers."""
    import socket

    servers = []
    for reply in (b"HTTP/1.1 400 Bad Request\r\n\r\n", None):
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve(server=server, reply=reply) -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                if reply is not None:
                    conn.sendall(reply)
                else:
                    conn.recv(64)  # silent until the client gives up

        threading.Thread(target=serve, daemon=True).start()
    yield [f"127.0.0.1:{s.getsockname()[1]}" for s in servers]
    for server in servers:
        server.close()


def test_an_address_that_is_not_ray_fails_fast_with_one_line(not_ray, tmp_path, capsys):
    import time

    pytest.importorskip("ray")
    for address in not_ray:
        started = time.monotonic()
        args = ["--executor", "ray", "--ray-address", address, "--out", str(tmp_path / "o")]
        line = one_line(capsys, 2, main([*SMOKE, *args]))
        assert time.monotonic() - started < 15
        assert "not as a Ray cluster" in line and address in line
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_console_script_into_a_closed_pipe_and_a_full_disk(finished):
    import subprocess

    with open("/dev/full", "w") as full:
        run = subprocess.run(
            ["ssmbench", "export", str(finished)], stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "No space" in run.stderr
    models = subprocess.Popen(
        ["ssmbench", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    models.stdout.close()  # like `| head` quitting before the output ends
    err = models.stderr.read().decode()
    assert models.wait() == 1 and err.count("\n") == 1 and "Broken pipe" in err


@pytest.mark.parametrize(
    ("outcome", "code", "expected"),
    [
        (KeyboardInterrupt(), 130, "interrupted: rerun the same command to resume"),
        (OSError(28, "No space left on device", "results.sqlite"), 1, "No space left"),
    ],
    ids=["ctrl-c", "disk full mid-run"],
)
def test_an_interrupted_or_starved_run_ends_with_one_line(
    finished, outcome, code, expected, capsys, monkeypatch
):
    import ssmbench.experiment.sweep as sweep

    def stopped(*args, **kwargs):
        raise outcome

    monkeypatch.setattr(sweep, "run_sweep", stopped)
    before = snapshot(finished)
    line = one_line(capsys, code, main([*SMOKE, "--out", str(finished)]))
    assert expected in line
    assert snapshot(finished) == before


def test_non_finite_numbers_in_an_old_store_never_crash_export(finished, capsys):
    import sqlite3

    with sqlite3.connect(finished / FILENAME) as db:  # as written before floats were checked
        db.execute('UPDATE cells SET metrics = \'{"accuracy": Infinity, "steps": 4}\'')
    assert main(["export", str(finished), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["accuracy"] is None  # JSON has no inf
    with sqlite3.connect(finished / FILENAME) as db:
        config = db.execute("SELECT config FROM cells").fetchone()[0]
        config = config.replace('"lr":0.003', '"lr":Infinity')
        assert "Infinity" in config
        db.execute("UPDATE cells SET config = ?", (config,))
    before = snapshot(finished)
    line = one_line(capsys, 2, main(["export", str(finished), "--format", "json"]))
    assert "--format csv" in line
    assert main(["export", str(finished), "--format", "csv"]) == 0
    assert snapshot(finished) == before


def exit_code(argv: list[str]) -> int:
    """main's exit code, argparse's refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_an_alias_bomb_is_refused_at_once_without_echoing_its_expansion(tmp_path, capsys):
    import time

    from test_cli import ALIAS_BOMB

    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    started = time.perf_counter()
    code = main([*SMOKE, "--config", str(tmp_path / "bomb.yaml"), "--out", str(tmp_path / "o")])
    assert time.perf_counter() - started < 0.5
    line = one_line(capsys, 2, code)
    assert "expand to more than 100,000 values" in line and len(line) < 400, line
    args = ["--task-param", f"n_tokens={ALIAS_BOMB}"]  # the same through a command-line value
    line = one_line(capsys, 2, exit_code([*SMOKE, *args, "--out", str(tmp_path / "o")]))
    assert "expand to more than" in line and not (tmp_path / "o").exists()


LONG = "x" * 200_000
ECHOED = {  # a user's value of 200,000 characters, where each kind of message echoes it
    "model name": (["--models", LONG], "unknown model xxx"),
    "yaml value": ("eval_lengths: [" + LONG + "]\n", "eval_lengths.0"),
    "yaml key": ("? " + LONG + "\n: 1\n", "unknown key"),
    "preset in yaml": ("preset: " + LONG + "\n", "unknown preset"),
    "task parameter": (["--task-param", f"{LONG}=1"], "selective-copy"),
    "comma list": (["--lengths", LONG], "comma-separated integers"),
    "choice": (["--scan", LONG], "invalid choice"),
    "plugin": (["--plugins", LONG], "cannot import plugin"),
}


@pytest.mark.parametrize("case", list(ECHOED))
def test_errors_clip_what_they_echo_and_say_how_much(case, tmp_path, capsys):
    args, expected = ECHOED[case]
    if isinstance(args, str):
        (tmp_path / "long.yaml").write_text(args)
        args = ["--config", str(tmp_path / "long.yaml")]
    line = one_line(capsys, 2, exit_code([*SMOKE, *args, "--out", str(tmp_path / "o")]))
    assert expected in line and "more characters)" in line and len(line) < 2_200, line[:3000]
    assert not (tmp_path / "o").exists()
