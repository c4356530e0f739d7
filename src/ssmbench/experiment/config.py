"""Typed configuration: presets, YAML files and command-line flags, validated once at the edge.

A sweep (`SweepConfig`) is models × widths × task settings × lengths × lrs × weight decays ×
seeds; each combination is a cell (`CellConfig`), saved with its result so that every number
traces back to what produced it. A task setting may carry its own lengths (zoology pairs each
length with a number of key-value pairs; MAD varies one difficulty axis per setting), and
`d_models` sweeps the width (the model's key then carries it: `mamba-s6@d128`).

The task section is tagged by `name` but is not a static pydantic discriminated union: it is
validated through the task registry (`task_config.parse_task`), so that tasks registered by
`--plugins` modules, unknown when this module is imported, are accepted like built-in ones.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ssmbench.experiment.task_config import DEFAULT_TASK, TASK_FIELD, TaskConfig, TaskSection
from ssmbench.models import get as model_spec
from ssmbench.models import names as model_names
from ssmbench.ops.scan import BACKENDS
from ssmbench.tasks import MAX_TRAIN_SEED


class ConfigError(ValueError):
    """A bad configuration: the message is one line that says what is wrong and how to fix it."""


ECHO_LIMIT = 300  # characters of a user's value an error message shows


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how many were cut: what a message shows of a
    value the user gave, which may be megabytes."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def shown(value: Any) -> str:
    """A user's value as an error message shows it: its repr, clipped."""
    return clip(repr(value))


INT64 = (-(2**63), 2**63 - 1)  # what the store (SQLite INTEGER) and torch can hold


def _check_int64(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"{clip(str(value))} does not fit in a 64-bit integer (|x| < 2**63)")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_int64(item)


class _Strict(BaseModel):
    """Unknown keys refused, floats finite (no inf or nan), integers within int64."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_int64(cls, value: Any) -> Any:
        _check_int64(value)
        return value


SIZES = frozenset({"n_layers", "d_state"})  # sizes a model's options may set for that model


class ArchConfig(_Strict):
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    d_state: PositiveInt = 16
    # per-model options, e.g. {"mamba-s6": {"dt_rank": 8}}; `ssmbench models` names them; also
    # n_layers and d_state, to give one model its own depth or state (zoology's Figure 2)
    options: dict[str, dict[str, int | float | bool | str]] = {}

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for model, values in options.items():
            for size in SIZES.intersection(values):
                if type(values[size]) is not int or values[size] < 1:
                    raise ValueError(f"{model}'s {size} must be an integer >= 1")
            layer_options = {k: v for k, v in values.items() if k not in SIZES}
            model_spec(model).check_options(layer_options)  # a ValueError names what is wrong
        return options

    def build_kwargs(self, model: str) -> dict[str, Any]:
        """What models.build takes for `model`: the sizes and that model's options."""
        sizes = {"d_model": self.d_model, "n_layers": self.n_layers, "d_state": self.d_state}
        return {**sizes, **self.options.get(model, {})}


class TrainConfig(_Strict):
    max_steps: PositiveInt = 200_000
    batch_size: PositiveInt = 64
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    # which parameters get which lr and decay (train.param_groups): upstream = each layer's marks
    # (layers/marks.py), uniform = one group, mad = mad-lab's (no decay on biases, norms, marks)
    param_groups: Literal["upstream", "uniform", "mad"] = "upstream"
    # lr after warm-up: constant, or cosine from lr to min_lr over max_steps, changed every step
    # or, with schedule_epochs, once per epoch of max_steps / schedule_epochs steps
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(0.0, ge=0)
    schedule_epochs: PositiveInt | None = None
    grad_clip: float | None = Field(None, gt=0)
    eval_every: PositiveInt = 100
    patience: PositiveInt | None = 5_000
    target_accuracy: float | None = Field(None, gt=0, le=1)
    time_budget_s: float | None = Field(None, gt=0)
    checkpoint_every: PositiveInt = 1_000
    val_size: PositiveInt = 1_024
    test_size: PositiveInt = 1_024
    length_test_size: PositiveInt | None = None  # test set at other lengths (None: test_size)

    @model_validator(mode="after")
    def _epochs_fit(self) -> TrainConfig:
        if self.schedule_epochs is not None and self.schedule_epochs > self.max_steps:
            raise ValueError(
                f"schedule_epochs ({self.schedule_epochs}) exceeds max_steps ({self.max_steps}): "
                "an epoch needs at least one step"
            )
        return self


class MeasureConfig(_Strict):
    enabled: bool = True
    warmup: int = Field(3, ge=3)
    repeats: int = Field(20, ge=20)


class _Cell(_Strict):
    plugins: list[str] = []  # modules imported first: they may register more models
    task: TaskConfig = TASK_FIELD
    arch: ArchConfig = ArchConfig()
    train: TrainConfig = TrainConfig()
    measure: MeasureConfig = MeasureConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    scan: Literal[BACKENDS] = "auto"  # type: ignore[valid-type]
    threads: PositiveInt | None = None
    # torch.compile the model (train and cost); off: slower on the 2-core CPU (docs/results)
    compile: bool = False
    # lengths the best weights are tested at after training (the training length always is)
    eval_lengths: list[Annotated[int, Field(strict=True, gt=0)]] = []

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, plugins: list[str]) -> list[str]:
        for module in plugins:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - report any import failure in one line
                raise ValueError(
                    f"cannot import plugin module {shown(module)}: {clip(str(e))}"
                ) from None
        return plugins


class CellConfig(_Cell):
    """One model trained on one task setting and length, at one lr and weight decay, one seed."""

    model: str
    seq_len: PositiveInt
    seed: int = Field(ge=0, lt=MAX_TRAIN_SEED)
    width_swept: bool = False  # its sweep varies arch.d_model: the width is part of its key

    @property
    def model_key(self) -> str:
        """The model setting: its registry name, with the width when the sweep varies it
        (`mamba-s6@d128`). Results are grouped, and their lr chosen, per model key."""
        return f"{self.model}@d{self.arch.d_model}" if self.width_swept else self.model

    @property
    def id(self) -> str:
        hp = self.train
        return (
            f"{self.model_key}/{self.task.key}/L{self.seq_len}/lr{hp.lr:g}"
            f"/wd{hp.weight_decay:g}/s{self.seed}"
        )

    @property
    def cost_id(self) -> str:
        """What its cost depends on: model, width and input shape (not lr, wd or seed)."""
        return f"{self.model_key}/{self.task.key}/L{self.seq_len}"


Length = Annotated[int, Field(strict=True, gt=0)]
SinkName = Literal["tensorboard", "wandb"]
_SBATCH_FLAG = re.compile(r"(--)?[A-Za-z][A-Za-z0-9_-]*(=\S.*)?")  # --name=value, --name


class TaskSetting(_Strict):
    """One entry of `tasks:`, written flat: `{name: mqar, num_kv_pairs: 4, lengths: [64]}`.

    `lengths`, when given, are the lengths this setting runs at instead of the sweep's
    `lengths` (a difficulty that pairs a length with task parameters); `train`, the keys of the
    train section this setting sets otherwise (a budget in epochs: fewer steps for a smaller
    training set). The lr and weight decay come from the sweep's grid alone."""

    task: TaskConfig
    lengths: list[Length] | None = Field(None, min_length=1)
    train: TrainConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return {"task": value}  # the task section says what it must be
        if isinstance(value.get("task"), TaskSection):  # built in code: TaskSetting(task=...)
            return value
        section = {k: v for k, v in value.items() if k not in ("lengths", "train")}
        return {"task": section, **{k: value[k] for k in ("lengths", "train") if k in value}}

    @model_validator(mode="after")
    def _not_the_grid(self) -> TaskSetting:
        grid = sorted(self.train_overrides().keys() & {"lr", "weight_decay"})
        if grid:
            raise ValueError(
                f"train.{grid[0]}: a task entry cannot set it; the sweep's lrs / weight_decays do"
            )
        return self

    def train_overrides(self) -> dict[str, Any]:
        """The train keys this entry sets (none: the sweep's train section as it is)."""
        if self.train is None:
            return {}
        return self.train.model_dump(include=self.train.model_fields_set)

    @model_serializer
    def _to_flat(self) -> dict[str, Any]:
        own = {} if self.lengths is None else {"lengths": self.lengths}
        if self.train is not None:
            own["train"] = self.train_overrides()
        return {**self.task.model_dump(), **own}


class SweepConfig(_Cell):
    """The whole experiment: every model × length × lr × weight decay × seed, and how to run it.

    `lrs` and `weight_decays` default to the single `train.lr` and `train.weight_decay`.
    """

    preset: str = "custom"
    description: str = ""  # one line, shown by `ssmbench presets`
    estimate: str = ""  # what a run costs, in words, shown by `ssmbench presets`
    models: list[str] = Field(min_length=1)
    tasks: list[TaskSetting] | None = Field(None, min_length=1)  # settings; default [task]
    lengths: list[Length] | None = Field(None, min_length=1)  # of settings without their own
    d_models: list[Length] | None = Field(None, min_length=1)  # widths swept (default arch's)
    lrs: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)
    weight_decays: list[Annotated[float, Field(ge=0)]] | None = Field(None, min_length=1)
    seeds: list[Annotated[int, Field(strict=True)]] = Field([0], min_length=1)
    executor: Literal["local", "ray", "slurm"] = "local"
    workers: PositiveInt = 1
    ray_address: str | None = None
    ray_num_cpus: float = Field(1.0, gt=0)
    ray_num_gpus: float = Field(1.0, gt=0, le=1)
    retries: int = Field(0, ge=0)  # Ray and SLURM: reruns of a cell whose worker died
    # logging sinks fed by the workers (experiment/sinks.py); not part of the fingerprint
    log: list[SinkName] = []
    slurm_partition: str | None = None
    slurm_gpus: int | None = Field(None, ge=0)  # per job; None: 1 for CUDA cells, else 0
    slurm_time: PositiveInt = 240  # minutes per job; a job timed out is checkpointed, requeued
    slurm_extra: list[str] = []  # more sbatch flags: "--account=abc" or "account=abc"

    @field_validator("log")
    @classmethod
    def _once_each(cls, log: list[str]) -> list[str]:
        return list(dict.fromkeys(log))

    @field_validator("slurm_extra")
    @classmethod
    def _sbatch_flags(cls, flags: list[str]) -> list[str]:
        for flag in flags:
            if not _SBATCH_FLAG.fullmatch(flag):
                raise ValueError(
                    f"{shown(flag)} is not an sbatch flag; write --name=value, e.g. --account=abc"
                )
        return flags

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        unknown = [m for m in models if m not in model_names()]
        if unknown:
            raise ValueError(
                f"unknown model {clip(', '.join(unknown))}; choose from {', '.join(model_names())}"
            )
        return models

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, seeds: list[int]) -> list[int]:
        bad = [s for s in seeds if not 0 <= s < MAX_TRAIN_SEED]
        if bad:
            raise ValueError(f"seeds must be in [0, 2**40), got {shown(bad)}")
        return seeds

    @model_validator(mode="after")
    def _every_setting_has_lengths(self) -> SweepConfig:
        own = [s.lengths is not None for s in self.tasks or []]
        if self.lengths is None and not (own and all(own)):
            raise ValueError("no lengths: give lengths (--lengths), or lengths in every task entry")
        if self.lengths is not None and own and all(own):
            raise ValueError(
                "lengths (--lengths) unused: every task entry has its own lengths; drop them"
                " or give a task entry without lengths"
            )
        return self

    @model_validator(mode="after")
    def _task_fits_every_length(self) -> SweepConfig:
        seen = set()
        for task, lengths in self.setting_lengths():
            for length in sorted({*lengths, *self.eval_lengths}):
                try:
                    task.build(length)
                except ValueError as e:
                    raise ValueError(
                        f"length {length} does not fit the task: {clip(str(e))}"
                    ) from None
            for length in lengths:
                if (task.key, length) in seen:
                    raise ValueError(f"tasks: {task.key} at L={length} is listed twice; drop one")
                seen.add((task.key, length))
        return self

    def entries(self) -> list[TaskSetting]:
        """The task entries swept (the `task` section alone when `tasks` is not given)."""
        return list(self.tasks or [TaskSetting(task=self.task)])

    def setting_lengths(self) -> list[tuple[TaskSection, list[int]]]:
        """Every task setting swept, with the lengths it runs at (its own, else the sweep's)."""
        return [(e.task, list(e.lengths or self.lengths or [])) for e in self.entries()]

    def settings(self) -> list[TaskSection]:
        """The task settings swept."""
        return [task for task, _ in self.setting_lengths()]

    def all_lengths(self) -> list[int]:
        """Every training length of the sweep, ascending."""
        return sorted({length for _, lengths in self.setting_lengths() for length in lengths})

    def widths(self) -> list[int]:
        """The d_model values swept (the arch section's alone unless `d_models` is given)."""
        return self.d_models or [self.arch.d_model]

    def grid(self) -> tuple[list[float], list[float]]:
        """The learning rates and weight decays swept."""
        return (
            self.lrs or [self.train.lr],
            self.weight_decays if self.weight_decays is not None else [self.train.weight_decay],
        )

    def cells(self) -> list[CellConfig]:
        shared = self.model_dump(include=set(_Cell.model_fields))
        lrs, wds = self.grid()
        settings = [
            (e.task.model_dump(), lengths, {**shared["train"], **e.train_overrides()})
            for e, (_, lengths) in zip(self.entries(), self.setting_lengths(), strict=True)
        ]
        return [
            CellConfig(
                model=m,
                seq_len=L,
                seed=s,
                width_swept=self.d_models is not None,
                **{
                    **shared,
                    "task": task,
                    "arch": {**shared["arch"], "d_model": d},
                    "train": {**train, "lr": lr, "weight_decay": wd},
                },
            )
            for m in self.models
            for d in self.widths()
            for task, lengths, train in settings
            for L in lengths
            for lr in lrs
            for wd in wds
            for s in self.seeds
        ]

    def fingerprint(self) -> str:
        """What sweeps sharing an output folder must agree on (models, task settings, lengths,
        widths, lrs, weight decays and seeds may grow); a swept width replaces arch.d_model, and
        task entries' own train keys are added where there are any."""
        shared = self.model_dump(include=set(_Cell.model_fields))
        if self.d_models is not None:
            shared["arch"]["d_model"] = "swept"
        own_train = [
            [e.task.key, e.lengths, e.train_overrides()] for e in self.entries() if e.train
        ]
        if own_train:
            shared["train_per_task"] = own_train
        return json.dumps(shared, sort_keys=True)


MAX_CONFIG_BYTES = 1 << 20  # a config is a few keys; more is the wrong file (or /dev/zero)
MAX_YAML_DEPTH = 50  # nesting; presets need 5
MAX_YAML_VALUES = 100_000  # values after aliases are expanded; presets hold under 1,000


class _Refused(yaml.YAMLError):
    """YAML that parses but is refused: a key given twice, too deep, aliases expanding too far."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_VALUES values or MAX_YAML_DEPTH
    levels, or refer to what holds them (`a: &a [*a]`): 381 bytes of nested aliases stand for
    9^9 values. Each distinct node is counted once (iteratively), in time linear in the file."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_ids: set[int] = set()  # the nodes being expanded: the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if not expanded:
            if key in open_ids:
                raise _Refused(f"the alias at line {node.start_mark.line + 1} refers to itself")
            if key not in sizes:
                open_ids.add(key)
                stack.append((node, True))
                stack.extend((child, False) for child in _children(node))
            continue
        open_ids.discard(key)
        below = [sizes[id(child)] for child in _children(node)]
        size = 1 + sum(n for n, _ in below)
        depth = 1 + max((d for _, d in below), default=0)
        if size > MAX_YAML_VALUES or depth > MAX_YAML_DEPTH:
            raise _Refused(
                f"the aliases from line {node.start_mark.line + 1} expand to more than "
                f"{MAX_YAML_VALUES:,} values or {MAX_YAML_DEPTH} levels; write the values out"
            )
        sizes[key] = (size, depth)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it lets through: a key given twice in one mapping
    (YAML 1.2 says keys are unique; PyYAML keeps the last), nesting deeper than MAX_YAML_DEPTH
    (its composer recurses: 5,000 levels end in RecursionError) and alias bombs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"values nested more than {MAX_YAML_DEPTH} levels deep at line "
                               f"{line}; a config needs a few levels")  # fmt: skip
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # `<<` merges: its keys may be overridden, as YAML says
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise _Refused(f"key {shown(key)} is given twice, at lines {seen[key]} and "
                               f"{line} (YAML keys are unique); keep one")  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)


def parse_yaml(text: str, source: str) -> Any:
    """The value YAML `text` holds, read strictly (_StrictLoader); ConfigError naming `source`
    (e.g. "config file F") and the line when it cannot be read."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except _Refused as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None)
        raise ConfigError(
            f"{source} is not valid YAML{where}" + (f": {clip(problem)}" if problem else "")
        ) from None
    except ValueError as e:  # a value YAML reads but Python will not (a 5,000-digit integer)
        raise ConfigError(f"{source}: {clip(str(e))}") from None


def _read_text(path: Path) -> str:
    """The config file's text: UTF-8, at most MAX_CONFIG_BYTES, not empty (ConfigError)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; "
                          "a config is a few keys: is it the right file?")  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} "
                          f"at line {line}); save it as UTF-8") from None  # fmt: skip


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a config file holds; ConfigError if it is empty, unreadable or not one."""
    source = f"config file {path}"
    data = parse_yaml(_read_text(path), source)
    if data is None:
        raise ConfigError(f"{source} is empty; give the keys to change (e.g. `preset: smoke`), "
                          "or leave out --config")  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of keys, not {type(data).__name__}")
    return data


PRESET_DIR = importlib.resources.files("ssmbench") / "presets"


def _read_presets() -> dict[str, dict[str, Any]]:
    """Every preset shipped in the package: presets/NAME.yaml -> its mapping."""
    found = {}
    for entry in sorted(PRESET_DIR.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = parse_yaml(
                entry.read_text(), f"preset file {entry.name}"
            )
    return found


PRESETS: dict[str, dict[str, Any]] = _read_presets()


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    if parts[:1] == ["tasks"] and parts[2:3] == ["task"]:  # a task entry is written flat
        del parts[2]
    where = ".".join(parts) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    value = first.get("input")
    quiet = first["type"] in ("missing", "value_error") or isinstance(value, dict)
    got = "" if quiet else f" (got {shown(value)})"
    return f"{clip(source)}: {clip(where)}: {message}{got}"


def _merge_layer(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`_merge`, except that naming another task replaces the task section instead of merging
    into it (the preset's parameters belong to its own task)."""
    task = update.get("task")
    old_name = (base.get("task") or {}).get("name", DEFAULT_TASK)
    if isinstance(task, dict) and task.get("name", old_name) != old_name:
        base = {key: value for key, value in base.items() if key != "task"}
    return _merge(base, update)


def _choose_preset(asked: str | None, file: Path | None, in_file: Any) -> str:
    """The preset to start from: the one asked for, else the YAML file's `preset:`, else quick."""
    if in_file is not None and in_file not in PRESETS:
        raise ConfigError(
            f"config file {file}: unknown preset {shown(in_file)}; "
            f"choose one of {', '.join(PRESETS)}"
        )
    if in_file is not None and asked is not None and in_file != asked:
        raise ConfigError(
            f"config file {file} says preset: {clip(str(in_file))} but --preset {clip(asked)} "
            "was given; "
            "keep one of them"
        )
    preset = asked or in_file or "quick"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {shown(preset)}; choose one of {', '.join(PRESETS)}")
    return preset


def _dedupe(data: dict[str, Any]) -> None:
    """Drop repeated list entries (each cell runs once), with a note on stderr."""
    for key in ("models", "lengths", "seeds", "lrs", "weight_decays", "d_models"):
        values = data.get(key)
        plain = isinstance(values, list) and all(isinstance(v, str | int | float) for v in values)
        if not plain:
            continue
        unique = list(dict.fromkeys(values))
        if len(unique) < len(values):
            data[key] = unique
            running = clip(",".join(map(str, unique)))
            print(f"note: repeated {key} dropped; running {key} {running}", file=sys.stderr)


def load_config(
    preset: str | None = None,
    file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SweepConfig:
    """Preset, then the YAML file on top, then command-line overrides; validated once.

    A YAML file's `preset:` key chooses the preset it builds on (quick when none is named).
    """
    from_file = read_yaml(file) if file is not None else {}
    preset = _choose_preset(preset, file, from_file.get("preset"))
    data = _merge({"preset": preset, **PRESETS[preset]}, {})
    source = f"preset {preset}"
    if file is not None:
        data, source = _merge_layer(data, from_file), str(file)
    if overrides:
        data, source = _merge_layer(data, overrides), "command line"
    _dedupe(data)
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from None
