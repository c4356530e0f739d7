"""`ssmbench export-data`: the file holds exactly the held-out sets (and training examples) the
trainer draws, loads with Hugging Face datasets, and bad input writes nothing."""

import errno
import json

import pytest
import torch

from ssmbench.cli import main
from ssmbench.experiment import export_data
from ssmbench.tasks import build
from ssmbench.tasks.base import IGNORE_INDEX
from ssmbench.tasks.data import TrainingStream, held_out

FIXED = {"task": "selective-copy", "params": {"n_tokens": 4, "vocab_size": 16}, "seq_len": 32}
VARIABLE = {"task": "parity", "params": {"train_lengths": "3-20"}, "seq_len": 20}


def drawn_by_the_trainer(case: dict, val: int, test: int, train: int, seed: int, batch: int):
    """What a run draws: its validation and test sets, then its first `train` examples."""
    task = build(case["task"], seq_len=case["seq_len"], **case["params"])
    sets = held_out(task, val, test)
    stream = TrainingStream(task, seed, batch, sets.digests)
    batches = [stream.next() for _ in range(-(-train // batch))]
    trained = tuple(torch.cat([b[i] for b in batches])[:train] for i in (0, 1))
    return {"validation": sets.validation, "test": sets.test, "train": trained}


@pytest.mark.parametrize(
    "case, suffix, module",
    [(FIXED, ".parquet", "pyarrow"), (VARIABLE, ".jsonl", "json")],
    ids=["fixed-length-parquet", "variable-length-jsonl"],
)
def test_reading_the_file_back_gives_the_tensors_the_trainer_draws(case, suffix, module, tmp_path):
    if module == "pyarrow":
        pytest.importorskip("pyarrow", reason="Parquet files need ssmbench[data]")
    path = tmp_path / f"sets{suffix}"
    argv = ["export-data", case["task"], "--seq-len", str(case["seq_len"]), "--val-size", "50",
            "--test-size", "60", "--train-examples", "70", "--seed", "3", "--batch-size", "32",
            "-o", str(path)]  # fmt: skip
    argv += [f"--param={key}={value}" for key, value in case["params"].items()]
    assert main(argv) == 0
    back = export_data.read(path)
    expected = drawn_by_the_trainer(case, 50, 60, 70, 3, 32)
    assert list(back.splits) == ["validation", "test", "train"]
    for split, (inputs, labels) in expected.items():
        assert torch.equal(back.splits[split][0], inputs), split
        assert torch.equal(back.splits[split][1], labels), split
    assert (back.splits["test"][1] == IGNORE_INDEX).any()
    assert back.meta["fingerprint"] == export_data.fingerprint(expected)
    assert back.meta["params"] == {**build(case["task"], seq_len=case["seq_len"],
                                           **case["params"]).model_dump()}  # fmt: skip
    assert (back.meta["val_size"], back.meta["test_size"], back.meta["seed"]) == (50, 60, 3)


def test_variable_length_rows_keep_their_padding(tmp_path):
    exported = export_data.export(tmp_path / "p.jsonl", None, False, "parity",
                                  params={"train_lengths": "3-20"}, seq_len=20)  # fmt: skip
    inputs, labels = exported.splits["validation"]
    pad = build("parity", seq_len=20, train_lengths="3-20").pad_token
    assert (inputs == pad).any() and (labels[inputs == pad] == IGNORE_INDEX).all()


@pytest.mark.parametrize("suffix, loader", [(".parquet", "parquet"), (".jsonl", "json")])
def test_hugging_face_datasets_loads_the_export(suffix, loader, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="loading exports needs ssmbench[data]")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / f"sets{suffix}"
    exported = export_data.export(path, None, False, **{**FIXED, "val_size": 20, "test_size": 30})
    rows = datasets.load_dataset(loader, data_files=str(path), cache_dir=str(tmp_path / "hf"))
    test = rows["train"].filter(lambda row: row["split"] == "test")
    assert torch.equal(torch.tensor(test["inputs"]), exported.splits["test"][0])
    assert torch.equal(torch.tensor(test["labels"]), exported.splits["test"][1])


def test_the_metadata_is_in_the_parquet_schema_and_beside_a_jsonl_file(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet files need ssmbench[data]")
    export_data.export(tmp_path / "a.parquet", None, False, **FIXED)
    export_data.export(tmp_path / "a.jsonl", None, False, **FIXED)
    in_parquet = json.loads(pq.read_schema(tmp_path / "a.parquet").metadata[b"ssmbench"])
    beside = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert in_parquet == beside and in_parquet["task_key"] == "selective-copy-M4-V16"


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssmbench: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "unknown task 'nope'"),
        (["parity", "--param", "colour=red"], "parity: colour: unknown parameter"),
        (["parity", "--param", "vocab_size=1"], "vocab_size"),
        (["selective-copy"], "no usual length: give --seq-len"),
        (["parity", "--val-size", "0"], "--val-size must be in 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    assert main(["export-data", *args, "-o", str(tmp_path / "x.jsonl")]) == 2
    assert message in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(tmp_path, capsys):
    path = tmp_path / "x.jsonl"
    path.write_text("mine\n")
    assert main(["export-data", "parity", "-o", str(path)]) == 2
    assert "exists; add --force" in one_error(capsys) and path.read_text() == "mine\n"
    assert main(["export-data", "parity", "--val-size", "5", "-o", str(path), "--force"]) == 0
    assert len(export_data.read(path).splits["validation"][0]) == 5


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_path_is_one_line_and_exit_2(where, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "x.jsonl" if where == "under-a-file" else "/proc/ssmbench.jsonl"
    assert main(["export-data", "parity", "-o", str(path)]) == 2
    assert "cannot write" in one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_write_that_fails_midway_leaves_no_file(tmp_path, capsys, monkeypatch):
    def half(exported, file) -> None:
        file.write(b'{"split": "validation", "inp')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_data, "_write_jsonl", half)
    assert main(["export-data", "parity", "-o", str(tmp_path / "x.jsonl")]) == 2
    assert "No space left on device" in one_error(capsys)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
