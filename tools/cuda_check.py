#!/usr/bin/env python
"""frn-det's prepared CUDA check (issue 14): one command, each step time-limited.

    python tools/cuda_check.py               # on one CUDA GPU; results in docs/cuda/
    python tools/cuda_check.py --dry-run     # the steps, their commands and limits
    python tools/cuda_check.py --cpu-smoke --out /tmp/cuda --work /tmp/cuda-work

Run it from the repository root: the checkout it checks (tests/, tools/, configs/) is the
working directory. Where frn-det is not installed (a GPU machine without make env),
``python -m frn_det_tools.cuda_check`` from the root runs the same. The logic is in
frn_det_tools.cuda_check (its docstring lists the steps and exit statuses).
"""

from __future__ import annotations

import sys

try:
    from frn_det_tools.cuda_check import main
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("frn_det"):
        raise
    sys.exit(
        f"{error}: install frn-det (make env), or run python -m frn_det_tools.cuda_check "
        "from the repository root"
    )

if __name__ == "__main__":
    sys.exit(main())
