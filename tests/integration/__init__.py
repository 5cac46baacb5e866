"""Tests of frn_det.integration: frn-det norms in stock detectron2 and its projects."""
