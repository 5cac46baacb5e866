#!/usr/bin/env python
"""Print how much an image's FPN features change when batched with a larger image.

    python tools/batch_leak.py [--rows frn,frn:pa,gn,gn:pa,bn,bn:pa] [--weights frn=PATH]
                               [--sizes HA WA HB WB] [--json FILE] [KEY VALUE ...]

One row per norm (":pa" = MODEL.PADDING_AWARE_NORM True), one column per FPN level: the
relative L2 change of image A's features over its valid region, alone vs batched with B.
The logic is in frn_det_tools.batch_leak.
"""

from __future__ import annotations

from frn_det_tools.batch_leak import main

if __name__ == "__main__":
    main()
