"""The config's task section: `{name: ..., <that task's parameters>}`, validated by the task itself.

The section is a union tagged by `name`: each registered task contributes one section model (its
parameters other than seq_len, with their types, bounds and defaults), resolved through the task
registry at validation time so that tasks registered by `--plugins` are accepted too. A bad or
unknown parameter is a one-line error naming the task and the parameter.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
)

from ssmbench.tasks import Task, task_class
from ssmbench.tasks.base import one_line, task_key

DEFAULT_TASK = "selective-copy"


class TaskSection(BaseModel):
    """A task's parameters other than seq_len; `build(seq_len)` makes the task."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The task's own parameters (everything but the name)."""
        return self.model_dump(exclude={"name"})

    @property
    def key(self) -> str:
        """Compact id of the task and its parameters, e.g. 'selective-copy-M16-V16'."""
        return task_key(self.name, self.params, task_class(self.name).key_fields)

    def build(self, seq_len: int) -> Task:
        """The task at length `seq_len` (ValueError in one line if it does not fit)."""
        from ssmbench.tasks import build

        return build(self.name, seq_len=seq_len, **self.params)


@cache
def section_model(name: str) -> type[TaskSection]:
    """The section model of task `name`: its fields but seq_len, `name` fixed to `name`."""
    cls = task_class(name)
    fields: dict[str, Any] = {
        key: (field.annotation, field)
        for key, field in cls.model_fields.items()
        if key != "seq_len"
    }
    return create_model(
        f"{cls.__name__}Section",
        __base__=TaskSection,
        name=(Literal[name], name),  # type: ignore[valid-type]
        **fields,
    )


def parse_task(value: Any) -> TaskSection:
    """A section from a mapping (name defaults to selective-copy) or a section as is."""
    if isinstance(value, TaskSection):
        return value
    if not isinstance(value, dict):
        raise ValueError("must be a mapping: name and the task's parameters")
    name = value.get("name", DEFAULT_TASK)
    try:
        return section_model(name).model_validate({**value, "name": name})
    except ValidationError as e:
        raise ValueError(one_line(e, name)) from None


TaskConfig = Annotated[SerializeAsAny[TaskSection], BeforeValidator(parse_task)]


def default_task() -> TaskSection:
    return parse_task({})


TASK_FIELD = Field(default_factory=default_task)
