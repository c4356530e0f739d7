"""The task interface: a frozen, validated object that draws (inputs, labels) batches.

A task is built from its own parameters (`seq_len`, `vocab_size`, `train_examples` and those of
its kind). `sample(B, generator)` returns

    inputs (B, T) int64 : token ids in [0, vocab_size)
    labels (B, T) int64 : the token to predict at each position, IGNORE_INDEX (-100) where
                          nothing is scored (the zoology / MAD convention)

so a model mapping tokens (B, T) to logits (B, T, V) is scored position by position and nothing
else in the harness knows a task's layout. `sample(B, generator, train=True)` draws the training
distribution and the labels the task trains on, which may differ from the scored ones (MAD trains
its recall tasks on every next token and scores only the recalled values; fuzzy recall trains on
keys of every motif length and is tested on the longest).

`readout` says how logits are read: `lm` (the model's own head, position by position) or
`autoencoder` (MAD's encoder-decoder for compression, see `ssmbench.models.autoencoder`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

IGNORE_INDEX = -100
VALIDATION_SEED = 2**40 + 1  # fixed held-out sets; training seeds stay below 2**40
TEST_SEED = 2**40 + 2
MAX_TRAIN_SEED = 2**40

Readout = Literal["lm", "autoencoder"]


class Task(BaseModel):
    """Base class: subclasses set `name`, `summary`, `source`, `key_fields` and `_draw`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what the task tests
    source: ClassVar[str]  # where its definition comes from
    readout: ClassVar[Readout] = "lm"
    key_fields: ClassVar[dict[str, str]] = {"vocab_size": "V"}  # parameter -> short tag in key

    seq_len: int = Field(gt=0, description="sequence length")
    vocab_size: int = Field(16, gt=1, description="number of token ids, special tokens included")
    train_examples: int | None = Field(
        None, gt=0, description="fixed training set size (None: fresh examples every step)"
    )

    @property
    def input_len(self) -> int:
        """T, the length of `inputs` (seq_len unless the task appends a query block)."""
        return self.seq_len

    @property
    def key(self) -> str:
        """Compact id of the task and its parameters other than seq_len, e.g. mqar-KV8-V8192."""
        return task_key(self.name, self.model_dump(), self.key_fields)

    def at_length(self, seq_len: int) -> Task:
        """The same task at another sequence length (validated again)."""
        return type(self)(**{**self.model_dump(), "seq_len": seq_len})

    def sample(
        self, batch_size: int, generator: torch.Generator, train: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, T) int64 and labels (B, T) int64, -100 where nothing is scored/trained."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        inputs, labels = self._draw(batch_size, generator, train)
        return inputs, labels

    @abstractmethod
    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def task_key(name: str, params: dict, key_fields: dict[str, str]) -> str:
    """name, then tag+value for each key field, e.g. selective-copy-M16-V16; training-set size
    is appended as -N<n> when fixed."""
    parts = [name]
    for field, tag in key_fields.items():
        value = params[field]
        parts.append(f"{tag}{int(value) if isinstance(value, bool) else f'{value:g}'}")
    if params.get("train_examples") is not None:
        parts.append(f"N{params['train_examples']}")
    return "-".join(parts)


def one_line(error: ValidationError, name: str) -> str:
    """The first error of a task's validation as one line: `mqar: num_kv_pairs: ...`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown parameter"
    return f"{name}: {where}: {message}" if where else f"{name}: {message}"


def uniform(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Integers uniform in [low, high), int64."""
    return torch.randint(low, high, shape, generator=generator)


def random_subsets(batch_size: int, n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(B, k) int64: for each row, a uniformly random k-subset of range(n), in random order."""
    keys = torch.rand(batch_size, n, generator=generator)  # (B, n)
    # The k smallest of n i.i.d. keys sit at a uniformly random k-subset, in a random order.
    return keys.topk(k, dim=1, largest=False).indices
