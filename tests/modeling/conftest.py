"""Modeling tests check structure and batch behaviour, not FRN kernels (tests/layers does)."""

import pytest
import torch

from frn_det.layers.frn import frn_impl


@pytest.fixture(autouse=True, scope="package")
def _small_cpu_settings():
    # "auto" compiles FRN kernels on first use, which costs tens of seconds on a small CPU;
    # the eager hand-written kernel computes the same function. The tensors here are tiny,
    # and on a shared 2-core machine OpenMP threads waiting on each other made a ResNet-18
    # step ten times slower than one thread does.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with frn_impl("autograd"):
            yield
    finally:
        torch.set_num_threads(threads)
