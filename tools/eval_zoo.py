#!/usr/bin/env python
"""Evaluate a checkpoint of frn-det's model zoo (MODEL_ZOO.md) with one command.

    python tools/eval_zoo.py mask_rcnn_R_50_FPN_3x_gn [--num-gpus 8] [KEY VALUE ...]
    python tools/eval_zoo.py NAME --weights path/to/model_final.pth
    python tools/eval_zoo.py --list

Fetches the catalog's checkpoint (downloads are cached; --weights takes a local copy),
refuses a file whose SHA-256 differs from the one the catalog records, then runs
tools/train_net.py --eval-only with the entry's config and MODEL.WEIGHTS. The logic is in
frn_det_tools.eval_zoo (the catalog in frn_det.model_zoo).
"""

from __future__ import annotations

import sys

from frn_det_tools.eval_zoo import main

if __name__ == "__main__":
    sys.exit(main())
