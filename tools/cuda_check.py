#!/usr/bin/env python
"""frn-det's prepared CUDA check (issue 14): one command, each step time-limited.

    python tools/cuda_check.py               # on one CUDA GPU; results in docs/cuda/
    python tools/cuda_check.py --dry-run     # the steps, their commands and limits
    python tools/cuda_check.py --cpu-smoke --out /tmp/cuda --work /tmp/cuda-work

The logic is in frn_det_tools.cuda_check (its docstring lists the steps and exit statuses).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run from a checkout without installing frn-det: make the repository importable.
sys.path.insert(0, str(REPO))

from frn_det_tools.cuda_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(repo=REPO))
