#!/usr/bin/env python
"""Tabulate and plot a sweep's results: AP against images per GPU, one line per norm.

    python tools/summarize.py output/sweep_shapes [--dest DIR] [--no-curves]

Writes summary.md, summary.csv, summary.json, ap_vs_ims_per_gpu.png and, per run,
curves/<config stem>/<norm>_ipg<N>_seed<S>.png (total loss and AP over iterations) into
DIR (default: OUTPUT/summary). The logic is in frn_det_tools.summarize.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing frn-det: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frn_det_tools.summarize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
