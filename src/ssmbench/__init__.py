"""ssmbench."""

# First, before anything loads torch: OpenMP's wait policy is read once, when torch loads it
# (see ssmbench.runtime), so `import ssmbench` before `import torch` sets it in any process.
from ssmbench import runtime  # noqa: F401
