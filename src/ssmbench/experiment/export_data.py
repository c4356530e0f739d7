"""A task's fixed held-out sets as a file that other codebases read (`ssmbench export-data`).

The sets are drawn by the trainer's own functions (`tasks.data.held_out` at the given sizes, and
for `train_rows` the `TrainingStream` of a seed and batch size), so they are exactly what a run
with those sizes is validated and tested on, and the first examples it trains on.

Rows, in Parquet or JSON Lines (both load with Hugging Face `datasets`): `split` ("validation",
"test", then "train" if asked), `index` within its split, `inputs` and `labels`, lists of int64 of
the task's input length: -100 wherever nothing is scored, a variable-length task's padding
included (training rows carry the labels the task trains on). The metadata: the task, its
parameters (seq_len included), the sizes, the ssmbench version and a fingerprint (BLAKE2b of
every split's name, shape and tensors), in the Parquet schema's metadata under `ssmbench`, or
for JSON Lines in `FILE.meta.json` beside it. Each file is written to a temporary file and
renamed, so no reader sees half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ssmbench.experiment.config import ConfigError, TrainConfig, clip
from ssmbench.experiment.task_config import parse_task
from ssmbench.files import ForeignFile, atomic_write, check_own
from ssmbench.tasks import MAX_TRAIN_SEED, task_class
from ssmbench.tasks.data import Batch, TrainingStream, held_out

FORMATS = ("parquet", "jsonl")
META_KEY = "ssmbench"  # the Parquet metadata key
MAX_ROWS = 10_000_000  # any one size: more is a typo, and would fill the memory first


@dataclass(frozen=True)
class Exported:
    """The sets, by split, and the metadata that travels with them."""

    meta: dict[str, Any]
    splits: dict[str, Batch]


def fingerprint(splits: dict[str, Batch]) -> str:
    """BLAKE2b of every split's name, shape, inputs and labels (int64, little-endian)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, (inputs, labels) in splits.items():
        digest.update(f"{name}:{tuple(inputs.shape)}".encode())
        for tensor in (inputs, labels):
            digest.update(tensor.to(torch.int64).contiguous().numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def _positive(value: int, what: str) -> int:
    if not 1 <= value <= MAX_ROWS:
        raise ConfigError(f"{what} must be in 1 .. {MAX_ROWS:,}, got {value}")
    return value


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _seq_len(task: str, seq_len: int | None) -> int:
    if seq_len is not None:
        return _positive(seq_len, "--seq-len")
    usual = task_class(task).model_fields["seq_len"].default
    if not isinstance(usual, int):
        raise ConfigError(f"{task} has no usual length: give --seq-len")
    return usual


def draw(
    task: str,
    params: dict[str, Any],
    seq_len: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    train_rows: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Exported:
    """The task's validation and test sets (sizes default to the trainer's) and, if
    `train_rows`, the first that many training examples of seed `seed` in batches of
    `batch_size` (the trainer's default); ConfigError or ValueError in one line if bad."""
    defaults = TrainConfig.model_fields
    sizes = {
        "val_size": _positive(_or(val_size, defaults["val_size"].default), "--val-size"),
        "test_size": _positive(_or(test_size, defaults["test_size"].default), "--test-size"),
    }
    section = parse_task({**params, "name": task})  # ValueError naming a bad parameter
    built = section.build(_seq_len(task, seq_len))
    sets = held_out(built, sizes["val_size"], sizes["test_size"])
    splits = {"validation": sets.validation, "test": sets.test}
    meta: dict[str, Any] = {"task": task, "task_key": section.key, "params": built.model_dump(),
                            **sizes}  # fmt: skip
    if train_rows is not None:
        if not 0 <= seed < MAX_TRAIN_SEED:
            raise ConfigError(f"--seed must be in [0, 2**40), got {seed}")
        batch = _positive(_or(batch_size, defaults["batch_size"].default), "--batch-size")
        stream = TrainingStream(built, seed, batch, sets.digests)
        n_batches = -(-_positive(train_rows, "--train-examples") // batch)
        batches = [stream.next() for _ in range(n_batches)]
        splits["train"] = (
            torch.cat([x for x, _ in batches])[:train_rows],
            torch.cat([y for _, y in batches])[:train_rows],
        )
        meta.update(train_examples=train_rows, seed=seed, batch_size=batch)
    try:
        meta["ssmbench_version"] = version("ssmbench")
    except PackageNotFoundError:
        meta["ssmbench_version"] = None
    meta["fingerprint"] = fingerprint(splits)
    return Exported(meta, splits)


def _rows(splits: dict[str, Batch]) -> list[dict[str, Any]]:
    return [
        {"split": name, "index": i, "inputs": x.tolist(), "labels": y.tolist()}
        for name, (inputs, labels) in splits.items()
        for i, (x, y) in enumerate(zip(inputs, labels, strict=True))
    ]


def _write_parquet(exported: Exported, file: BinaryIO) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        _rows(exported.splits),
        schema=pa.schema(
            [
                ("split", pa.string()),
                ("index", pa.int64()),
                ("inputs", pa.list_(pa.int64())),
                ("labels", pa.list_(pa.int64())),
            ],  # fmt: skip
            metadata={META_KEY: json.dumps(exported.meta)},
        ),
    )
    pq.write_table(table, file)


def _write_jsonl(exported: Exported, file: BinaryIO) -> None:
    text = io.TextIOWrapper(file, encoding="utf-8", newline="\n")
    for row in _rows(exported.splits):
        text.write(json.dumps(row) + "\n")
    text.flush()
    text.detach()


def meta_path(path: Path) -> Path:
    """Where the metadata of a JSON Lines export lives."""
    return path.with_name(path.name + ".meta.json")


def _check_target(path: Path, fmt: str, force: bool) -> None:
    """ConfigError, before anything is drawn, if the export cannot go to `path`."""
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: {path.parent} is not a folder")
    for target in (path,) if fmt == "parquet" else (path, meta_path(path)):
        try:
            check_own(target)  # a link or a folder is never written through
        except (ForeignFile, OSError) as e:
            raise ConfigError(str(e)) from None
        if target.exists() and not force:
            raise ConfigError(f"{target} exists; add --force to replace it")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                '--format parquet needs pyarrow: pip install "ssmbench[data]"'
            ) from None


def write(exported: Exported, path: Path, fmt: str) -> None:
    """Write the export to `path`, each file whole or not at all (ConfigError if it cannot)."""
    try:
        if fmt == "parquet":
            atomic_write(path, lambda file: _write_parquet(exported, file))
            return
        atomic_write(path, lambda file: _write_jsonl(exported, file))  # rows, then their meta
        meta = json.dumps(exported.meta, indent=1).encode()
        atomic_write(meta_path(path), lambda file: file.write(meta))
    except (OSError, ForeignFile) as e:
        raise ConfigError(clip(str(e))) from None


def export(path: Path, fmt: str | None, force: bool, task: str, **draw_args: Any) -> Exported:
    """`ssmbench export-data`: the target checked, the sets drawn (`draw`), the file written;
    ConfigError or ValueError in one line for bad input, with nothing written."""
    path = Path(path)
    fmt = fmt or ("jsonl" if path.suffix in (".jsonl", ".json") else "parquet")
    _check_target(path, fmt, force)
    exported = draw(task, **draw_args)
    write(exported, path, fmt)
    return exported


def _splits(rows: list[dict[str, Any]]) -> dict[str, Batch]:
    grouped: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
    for row in rows:
        inputs, labels = grouped.setdefault(row["split"], ([], []))
        inputs.append(row["inputs"])
        labels.append(row["labels"])
    return {
        name: (torch.tensor(x, dtype=torch.int64), torch.tensor(y, dtype=torch.int64))
        for name, (x, y) in grouped.items()
    }


def read(path: Path) -> Exported:
    """An export read back: its metadata and its sets as int64 tensors, by split."""
    path = Path(path)
    with open(path, "rb") as file:
        is_parquet = file.read(4) == b"PAR1"
    if not is_parquet:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return Exported(json.loads(meta_path(path).read_text()), _splits(rows))
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[META_KEY.encode()])
    return Exported(meta, _splits(table.to_pylist()))
