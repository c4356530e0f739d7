"""BaseConv (Arora et al. 2024, zoology `zoology/mixers/base_conv.py`): a gated convolution

    y = conv(u) ⊙ (W u + b)

where conv is a short depthwise causal convolution (kernel k) or, with k = 0, an implicit long
convolution (the Hyena filter, as zoology's ImplicitLongConvolution). Upstream adds u back inside
the layer; here the backbone's residual connection does that.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmbench.layers.hyena import ImplicitFilter, ShortConv


class BaseConv(nn.Module):
    def __init__(self, d_model: int, kernel: int = 3) -> None:
        super().__init__()
        self.projection = nn.Linear(d_model, d_model)
        self.conv = ShortConv(d_model, kernel) if kernel else ImplicitFilter(d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        conv = self.conv(u.mT).mT if isinstance(self.conv, ShortConv) else self.conv(u)  # (B, L, D)
        return conv * self.projection(u)
