#!/usr/bin/env python
"""Tabulate and plot a sweep's results: AP against images per GPU, one line per norm.

    python tools/summarize.py output/sweep_shapes [--dest DIR] [--no-curves]

Writes summary.md, summary.csv, summary.json, ap_vs_ims_per_gpu.png and, per run,
curves/<config stem>/<norm>_ipg<N>_seed<S>.png (total loss and AP over iterations) into
DIR (default: OUTPUT/summary). The logic is in frn_det_tools.summarize.
"""

from __future__ import annotations

import sys

from frn_det_tools.summarize import main

if __name__ == "__main__":
    sys.exit(main())
