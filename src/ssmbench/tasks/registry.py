"""The registry: every task by name. Adding a task is one file and one line below."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ssmbench.tasks.base import Task, one_line
from ssmbench.tasks.compositional_mqar import CompositionalMQAR
from ssmbench.tasks.compression import Compression
from ssmbench.tasks.cumulative_parity import CumulativeParity
from ssmbench.tasks.flip_flop import FlipFlop
from ssmbench.tasks.forgetting_mqar import ForgettingMQAR
from ssmbench.tasks.fuzzy_recall import FuzzyInContextRecall
from ssmbench.tasks.induction import InductionHeads
from ssmbench.tasks.majority import Majority
from ssmbench.tasks.memorization import Memorization
from ssmbench.tasks.modular_arithmetic import ModularArithmetic
from ssmbench.tasks.mqar import MQAR
from ssmbench.tasks.ngram_lookup import NgramLookup
from ssmbench.tasks.parity import Parity
from ssmbench.tasks.recall import InContextRecall, NoisyInContextRecall
from ssmbench.tasks.selective_copy import Copy, SelectiveCopy
from ssmbench.tasks.string_copy import StringCopy
from ssmbench.tasks.word_problem import WordProblem

REGISTRY: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        SelectiveCopy,
        Copy,
        InductionHeads,
        MQAR,
        InContextRecall,
        FuzzyInContextRecall,
        NoisyInContextRecall,
        Memorization,
        Compression,
        Parity,
        ModularArithmetic,
        WordProblem,
        CumulativeParity,
        Majority,
        ForgettingMQAR,
        CompositionalMQAR,
        StringCopy,
        NgramLookup,
        FlipFlop,
    )
}


def register(name: str, cls: type[Task]) -> None:
    """Add a task class (a `Task` subclass whose `name` is `name`)."""
    if name in REGISTRY:
        raise ValueError(f"a task named {name!r} is already registered")
    if not (isinstance(cls, type) and issubclass(cls, Task)) or cls.name != name:
        raise ValueError(f"task {name!r} must be a Task subclass with name = {name!r}")
    REGISTRY[name] = cls


def names() -> list[str]:
    return list(REGISTRY)


def task_class(name: str) -> type[Task]:
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build(name: str, **params: Any) -> Task:
    """The task `name` with `params` (seq_len and its own); a bad one is a one-line ValueError."""
    cls = task_class(name)
    try:
        return cls(**params)
    except ValidationError as e:
        raise ValueError(one_line(e, name)) from None


def parameters(name: str) -> dict[str, tuple[Any, str]]:
    """Each parameter of task `name` other than seq_len: (default, description)."""
    fields = task_class(name).model_fields
    return {
        key: (field.default, field.description or "")
        for key, field in fields.items()
        if key != "seq_len"
    }
