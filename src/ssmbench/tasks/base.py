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

A `VariableLengthTask` draws examples of different lengths in one batch: an example of length n
fills positions 0 .. n-1 and the rest holds the task's pad token, labelled -100, so nothing
downstream needs to know (the labels say what is scored). Its `train_lengths` ("3-40") is the
training range; its `test_lengths` ("40-256") the range it is scored on at other lengths (see
`VariableLengthTask.length_range`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

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
    """name, then tag+value for each key field, e.g. selective-copy-M16-V16 (a string as it is,
    None left out); training-set size is appended as -N<n> when fixed."""
    parts = [name]
    for field, tag in key_fields.items():
        value = params[field]
        if value is not None:
            parts.append(f"{tag}{_key_value(value)}")
    if params.get("train_examples") is not None:
        parts.append(f"N{params['train_examples']}")
    return "-".join(parts)


def _key_value(value: bool | float | str) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return value if isinstance(value, str) else f"{value:g}"


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


LengthRange = Annotated[str, StringConstraints(pattern=r"^[0-9]+-[0-9]+$")]  # "lo-hi"


def train_lengths_field(default: str | None = None) -> Any:
    """The `train_lengths` field, with a task's own default."""
    return Field(
        default,
        description="lo-hi: training lengths, uniform in lo .. hi <= seq_len (None: seq_len)",
    )


def test_lengths_field(default: str | None = None) -> Any:
    """The `test_lengths` field, with a task's own default."""
    return Field(default, description="lo-hi: scored at a length T in it, lengths uniform lo .. T")


def length_range(text: str | None) -> tuple[int, int] | None:
    """ "3-40" -> (3, 40); None stays None."""
    if text is None:
        return None
    lo, hi = text.split("-")
    return int(lo), int(hi)


class VariableLengthTask(Task):
    """A task whose examples have lengths of their own, padded to seq_len in one batch.

    Ranges are written "lo-hi" (inclusive; a string, so that keys, the store and the report take
    them as they take any parameter). Subclasses set `pad_token` and `min_length` and draw with
    `example_lengths` and `pad_beyond`. Which lengths a batch holds at seq_len T
    (`length_range`), with train_lengths = "a-b" and test_lengths = "c-d":

        training (train=True)        a .. b, or T when train_lengths is None
        scored, T = b                a .. b (the held-out sets at the training length)
        scored, c <= T <= d          c .. T (at T = d: the whole test range)
        scored, otherwise            T (every example as long as the sequence)

    A run trains at L = b; each of its eval_lengths then reports one range or one exact length
    through the by-length results every task has.
    """

    min_length: ClassVar[int] = 1  # the shortest example the task can make

    train_lengths: LengthRange | None = train_lengths_field()
    test_lengths: LengthRange | None = test_lengths_field()

    @property
    @abstractmethod
    def pad_token(self) -> int:
        """The token after an example's end (labelled -100)."""

    @model_validator(mode="after")
    def _check_lengths(self) -> VariableLengthTask:
        if self.seq_len < self.min_length:
            raise ValueError(f"seq_len must be >= {self.min_length}, got {self.seq_len}")
        for field in ("train_lengths", "test_lengths"):
            span = length_range(getattr(self, field))
            if span is not None and not self.min_length <= span[0] <= span[1]:
                raise ValueError(
                    f"{field} must be lo-hi with {self.min_length} <= lo <= hi, "
                    f"got {getattr(self, field)}"
                )
        train = length_range(self.train_lengths)
        if train is not None and train[1] > self.seq_len:
            raise ValueError(
                f"train_lengths {self.train_lengths} ends past seq_len {self.seq_len}: train at "
                f"L = {train[1]} or shorten train_lengths"
            )
        return self

    def length_range(self, train: bool) -> tuple[int, int]:
        """(lo, hi): the lengths of the examples a draw holds (see the class docstring)."""
        T = self.seq_len
        training, test = length_range(self.train_lengths), length_range(self.test_lengths)
        if training is not None and (train or training[1] == T):
            return training
        if not train and test is not None and test[0] <= T <= test[1]:
            return test[0], T
        return T, T

    def example_lengths(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> torch.Tensor:
        """(B,) int64: each example's length, uniform over `length_range(train)`."""
        lo, hi = self.length_range(train)
        return torch.randint(lo, hi + 1, (batch_size,), generator=generator)

    def pad_beyond(
        self, inputs: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs, labels (B, T) with position t >= lengths[b] set to the pad token and -100."""
        beyond = torch.arange(inputs.shape[1]) >= lengths[:, None]  # (B, T)
        return inputs.masked_fill(beyond, self.pad_token), labels.masked_fill(beyond, IGNORE_INDEX)
