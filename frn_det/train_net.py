"""``python -m frn_det.train_net``: tools/train_net.py's command line (same flags) from an
installed frn-det, without a checkout; the sweep starts its runs with it."""

from frn_det.engine.cli import run

if __name__ == "__main__":
    run()
