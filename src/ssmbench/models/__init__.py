"""Models: blocks, backbone, and the registry of every model by name (built-ins in zoo.py)."""

from ssmbench.models import zoo  # noqa: F401 - registers the built-in models
from ssmbench.models.registry import (
    MODELS,
    ModelSpec,
    backends_of,
    build,
    get,
    n_params,
    names,
    register,
    restored_registry,
    study_names,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "backends_of",
    "build",
    "get",
    "n_params",
    "names",
    "register",
    "restored_registry",
    "study_names",
]
