"""Old name of `vessa.model.volume_segmenter`, kept only for `vessa.priors.transfer` until it
imports `SegmentResult` and `check_templates` from there; then delete this file."""

from vessa.model.volume_segmenter import SegmentResult, check_templates

__all__ = ["SegmentResult", "check_templates"]
