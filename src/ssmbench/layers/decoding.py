"""Recurrent decoding's one shared type (see models/backbone.py for the interface)."""


class Constants(tuple):
    """What a layer computes once for decoding (a filter, a discretized system): kept in its
    state beside the per-sequence tensors, but not part of the recurrent state itself."""
