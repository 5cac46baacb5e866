"""Shared settings for the layer tests."""

import torch._inductor.config

# The FRN tests compile about a dozen small kernels; on a 2-core machine a pool of compile
# subprocesses costs more to start than it saves.
torch._inductor.config.compile_threads = 1
