#!/usr/bin/env bash
# The GPU check, as one prepared script (under 8 minutes on one GPU): the selective-scan
# benchmark and `ssmbench bench` on CUDA, written as one Markdown file naming the GPU.
#
#   bash benchmarks/gpu.sh [OUT_DIR]       # default docs/results
#
# Needs a CUDA build of torch; installs ssmbench (and the optional CUDA kernels when they build) if
# absent. Optional kernels, each used on CUDA when it imports and recorded per row:
#   mamba-ssm      selective_scan_fn (scan_backend cuda-mamba_ssm) and Mamba-2's
#                  mamba_chunk_scan_combined (ssd_backend mamba_ssm)
#   causal-conv1d  causal_conv1d_fn, Mamba's and Mamba-2's short convolution (conv_backend)
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${1:-docs/results}
mkdir -p "$out_dir"

python -c "import ssmbench" 2>/dev/null || python -m pip install --quiet -e ".[dev]"
python -c "import pynvml" 2>/dev/null || python -m pip install --quiet nvidia-ml-py || true
python -c "import mamba_ssm" 2>/dev/null \
  || timeout 240 python -m pip install --quiet --no-build-isolation mamba-ssm \
  || echo "mamba_ssm unavailable: the CUDA-kernel column will be missing" >&2
python -c "import causal_conv1d" 2>/dev/null \
  || timeout 240 python -m pip install --quiet --no-build-isolation causal-conv1d \
  || echo "causal_conv1d unavailable: Mamba's convolution runs on torch's conv1d" >&2

gpu=$(python -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))")
slug=$(echo "$gpu" | tr -cs 'A-Za-z0-9' '-' | sed 's/-*$//')
file="$out_dir/gpu-$slug.md"
{
  echo "# ssmbench on $gpu"
  echo
  python - <<'PY'
import time
import torch
from ssmbench.experiment.measure import environment
e = environment(torch.device("cuda"))
print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bash benchmarks/gpu.sh`: "
      f"torch {e['torch_version']}, CUDA {e['cuda_version']}, "
      f"ssmbench {e['ssmbench_version']} ({e['git_commit']}).")
PY
  echo
  echo "## selective_scan: ours vs the reference (and mamba_ssm's kernel)"
  echo
  timeout 150 python benchmarks/scan.py --device cuda --methods reference torch-chunked cuda --baseline torch-chunked
  echo
  echo "## ssmbench bench: twelve models, batch 64, 16 tokens"
  echo
  timeout 270 ssmbench bench --device cuda --lengths 256,512,784
} > "$file"
echo "wrote $file"
