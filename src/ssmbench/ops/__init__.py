"""Pure functions on tensors: the selective scan, HiPPO, discretization, SSM kernels and the delta
rule."""

from ssmbench.ops.delta_rule import (
    delta_product,
    delta_product_reference,
    delta_rule,
    delta_rule_reference,
)
from ssmbench.ops.discretize import discretize_dense, discretize_diagonal
from ssmbench.ops.hippo import hippo_legs, hippo_legs_dplr, s4d_diagonal
from ssmbench.ops.kernels import dense_kernel, dplr_kernel, fft_conv, vandermonde_kernel
from ssmbench.ops.scan import (
    resolve_backend,
    selective_scan,
    selective_scan_reference,
    set_default_backend,
)

__all__ = [
    "delta_product",
    "delta_product_reference",
    "delta_rule",
    "delta_rule_reference",
    "dense_kernel",
    "discretize_dense",
    "discretize_diagonal",
    "dplr_kernel",
    "fft_conv",
    "hippo_legs",
    "hippo_legs_dplr",
    "resolve_backend",
    "s4d_diagonal",
    "selective_scan",
    "selective_scan_reference",
    "set_default_backend",
    "vandermonde_kernel",
]
