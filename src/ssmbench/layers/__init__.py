"""Sequence mixers: (B, L, D) -> (B, L, D), causal."""

from ssmbench.layers.attention import CausalSelfAttention
from ssmbench.layers.lti import S4, S4D, LTIMixer, S4LowRank
from ssmbench.layers.mlp import GatedMLP
from ssmbench.layers.recurrent import LSTM
from ssmbench.layers.s6 import S6

__all__ = ["LSTM", "S4", "S4D", "S6", "CausalSelfAttention", "GatedMLP", "LTIMixer", "S4LowRank"]
