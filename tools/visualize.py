#!/usr/bin/env python
"""Draw a model's predictions (boxes, masks, class, score) beside the ground truth.

    python tools/visualize.py output/demo_frn                      # its val images
    python tools/visualize.py out/bn out/gn out/frn --num-images 8 # checkpoints side by side
    python tools/visualize.py --config-file CFG model.pth --images my_pngs/

Writes a PNG per image and checkpoint and sheet.png (all checkpoints side by side) into
--output (default: RUN/predictions for one run folder, else output/visualize). The logic
is in frn_det_tools.visualization.
"""

from __future__ import annotations

import sys

from frn_det_tools.visualization import main

if __name__ == "__main__":
    sys.exit(main())
