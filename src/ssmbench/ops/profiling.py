"""Profiler scopes: an op decorated `@scoped("sequence op")` runs inside the torch.profiler
scope `ssmbench::sequence op`, which `ssmbench bench --profile` (experiment/profile.py) groups a
step's time by. Outside a profiler a scope costs a few microseconds per call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from torch.profiler import record_function

PREFIX = "ssmbench::"
F = TypeVar("F", bound=Callable)


def scoped(group: str) -> Callable[[F], F]:
    """Run the decorated function inside the profiler scope ssmbench::<group>."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with record_function(PREFIX + group):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return decorate
