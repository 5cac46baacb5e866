#!/usr/bin/env python
"""Write docs/batch_dependence's tables, plot and curves from the fixed-batch grid's run
folders (and the learning-rate search's):

    python tools/batch_dependence.py output/batch_dependence_v2/grid \
        --lr-search output/batch_dependence_v2/lr_search \
        --schedule-probe output/probe/converge --dest docs/batch_dependence

The logic is in frn_det_tools.batch_dependence.
"""

from __future__ import annotations

import sys

from frn_det_tools.batch_dependence import main

if __name__ == "__main__":
    sys.exit(main())
