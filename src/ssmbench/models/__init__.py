"""Models: blocks, backbone and the registry of the twelve by name."""

from ssmbench.models.registry import MODELS, build, n_params, names, register

__all__ = ["MODELS", "build", "n_params", "names", "register"]
