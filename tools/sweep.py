#!/usr/bin/env python
"""Train a grid of configs x norms x images per GPU (x repeats) with tools/train_net.py.

    python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' \\
        --norms bn,syncbn,gn,frn --norm-gpus syncbn=2 --ims-per-gpu 1,2,4,8 \\
        --output output/sweep_shapes --dry-run

One train_net process per run, in OUTPUT/<config stem>/<norm>/ipg<N>/seed<S>/; finished
runs are skipped and interrupted ones resumed when the command is repeated. Then
``tools/summarize.py OUTPUT`` tabulates and plots the results. The logic is in
frn_det_tools.sweep.
"""

from __future__ import annotations

import sys

from frn_det_tools.sweep import main

if __name__ == "__main__":
    sys.exit(main())
