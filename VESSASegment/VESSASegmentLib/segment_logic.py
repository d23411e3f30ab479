"""SegmentLogic: scene + parameters -> a validated SegmentRequest -> a running AutoSegmentJob.

It opens no dialogs: problems raise `vessa.errors` exceptions whose one-line message says what
is wrong and what to do; the effect shows them in its panel.
"""

from __future__ import annotations

import numpy as np
import slicer

from vessa.errors import InputError
from vessa.io import TemplateBank
from vessa.plausibility import image_warnings

from . import scene_io
from .auto_segment_job import AutoSegmentJob
from .completer_loader import CompleterLoader
from .drawn_slice_collector import DrawnSliceCollector
from .modality import volumeModality
from .oriented_image import matrixBetween, referenceGeometry
from .parameters import Parameters
from .predictor import PredictorLoader
from .segment_request import SegmentRequest, SegmentTask
from .template_collector import TemplateCollector
from .terminology import Structure


class SegmentLogic:
    """Prepares and starts auto-segment jobs.

    collector: finds templates (default TemplateCollector()); loader: (checkpoint, device,
    allowUntrained) -> Predictor (default PredictorLoader(), i.e. vessa.model.load_segmenter);
    drawnCollector, completers: the same for template source "drawn" (the segment's drawn slices,
    completed by `vessa.priors`; default DrawnSliceCollector(), CompleterLoader()). Both models
    are kept between runs, with their encoder feature caches.
    """

    def __init__(
        self,
        collector: TemplateCollector | None = None,
        loader: PredictorLoader | None = None,
        drawnCollector: DrawnSliceCollector | None = None,
        completers: CompleterLoader | None = None,
    ):
        self.collector = collector or TemplateCollector()
        self.loader = loader or PredictorLoader()
        self.drawnCollector = drawnCollector or DrawnSliceCollector()
        self.completers = completers or CompleterLoader()

    def request(
        self, parameters: Parameters, sourceVolumeNode, segmentationNode, segmentIds: list[str]
    ) -> SegmentRequest:
        """A request for the given segments; InputError on anything missing (templates: the
        message lists the names there are)."""
        self._requireScene(parameters, sourceVolumeNode, segmentationNode)
        if not segmentIds or not segmentIds[0]:
            raise InputError(
                "no segment selected: select the segment to fill (add an empty one named after the structure)"
            )
        bank = self.bank(parameters)
        tasks = [
            self._task(parameters, sourceVolumeNode, segmentationNode, segmentId, bank) for segmentId in segmentIds
        ]
        return self._request(parameters, sourceVolumeNode, segmentationNode, tasks)

    def batchRequest(
        self, parameters: Parameters, sourceVolumeNode, segmentationNode
    ) -> tuple[SegmentRequest, list[str]]:
        """A request for every empty segment that has templates, and a line per skipped segment."""
        self._requireScene(parameters, sourceVolumeNode, segmentationNode)
        if parameters.templateSource == "drawn":
            raise InputError(
                "'Segment all empty segments' fills empty segments from templates; slices drawn in a segment are "
                "completed one segment at a time (VESSA auto-segment)"
            )
        empty = self.emptySegmentIds(segmentationNode)
        if not empty:
            raise InputError(f"segmentation {segmentationNode.GetName()!r} has no empty segment to fill")
        bank = self.bank(parameters)
        tasks, skipped = [], []
        for segmentId in empty:
            try:
                tasks.append(self._task(parameters, sourceVolumeNode, segmentationNode, segmentId, bank))
            except InputError as error:
                skipped.append(f"{segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()}: {error}")
        if not tasks:
            raise InputError("no empty segment has templates. " + " ".join(skipped))
        return self._request(parameters, sourceVolumeNode, segmentationNode, tasks), skipped

    def start(self, parameters: Parameters, request: SegmentRequest) -> AutoSegmentJob:
        """Start a background job for `request` with the parameters' model and device."""

        def predictorFor(device: str):
            if parameters.templateSource == "drawn":
                return self.completers(device)
            return self.loader(parameters.checkpoint, device, parameters.allowUntrained, parameters.sliceStep())

        job = AutoSegmentJob(predictorFor, request, parameters.device)
        job.start()
        return job

    @staticmethod
    def bank(parameters: Parameters) -> TemplateBank | None:
        """The template bank to use, or None for templates from the scene."""
        return TemplateBank.open(parameters.bankFolder) if parameters.templateSource == "bank" else None

    def suggestedSource(self, parameters: Parameters, sourceVolumeNode, segmentationNode, segmentId: str) -> str:
        """The template source for a newly selected segment: "drawn" when the segment has drawn
        slices and no other volume has a non-empty segment of its structure (terminology, else
        name); "scene" instead of "drawn" for a segment with such templates and no drawn slices;
        otherwise (and always while a bank is chosen) the current one."""
        current = parameters.templateSource
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentationNode and segmentId else None
        if current == "bank" or segment is None:
            return current
        templates = self.collector.hasSceneTemplates(Structure.ofSegment(segment), sourceVolumeNode)
        if current == "scene" and templates:
            return current
        drawn = self.drawnCollector.hasDrawnSlices(segmentationNode, segmentId, sourceVolumeNode)
        if drawn and not templates:
            return "drawn"
        return "scene" if templates and not drawn else current

    @staticmethod
    def emptySegmentIds(segmentationNode) -> list[str]:
        """Ids of the segments without any voxel, in the segmentation's order."""
        segmentation = segmentationNode.GetSegmentation()
        empty = []
        for segmentId in segmentation.GetSegmentIDs():
            voxels = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)
            label = segmentation.GetSegment(segmentId).GetLabelValue()
            if voxels is None or not np.any(voxels == label):
                empty.append(segmentId)
        return empty

    @staticmethod
    def _requireScene(parameters: Parameters, sourceVolumeNode, segmentationNode) -> None:
        ok, reason = parameters.isValid()
        if not ok:
            raise InputError(reason)
        if sourceVolumeNode is None or sourceVolumeNode.GetImageData() is None:
            raise InputError("no source volume: select the volume to segment in the Segment Editor")
        if segmentationNode is None:
            raise InputError("no segmentation: create or select one in the Segment Editor")

    def _task(self, parameters: Parameters, sourceVolumeNode, segmentationNode, segmentId: str, bank) -> SegmentTask:
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise InputError(f"segmentation {segmentationNode.GetName()!r} has no segment {segmentId!r}")
        name = segment.GetName()
        if parameters.templateSource == "drawn":
            drawn = self.drawnCollector.collect(segmentationNode, segmentId, sourceVolumeNode)
            return SegmentTask(segmentId, name, name, [], drawn=drawn)
        collection = self.collector.collect(Structure.ofSegment(segment), sourceVolumeNode, bank)
        return SegmentTask(segmentId, name, parameters.promptText(name), collection.templates, collection.warnings)

    @staticmethod
    def _request(
        parameters: Parameters, sourceVolumeNode, segmentationNode, tasks: list[SegmentTask]
    ) -> SegmentRequest:
        """Copy what the worker needs out of the scene (the transforms as matrices, now) and add
        the warnings about the image (constant, a slice step above a structure's extent)."""
        image = scene_io.nodeToVolume(sourceVolumeNode)
        for task in tasks:
            task.warnings += image_warnings(image, task.templates, parameters.sliceStep())
        return SegmentRequest(
            image,
            volumeModality(sourceVolumeNode, image.array),
            tasks,
            referenceGeometry(segmentationNode),
            matrixBetween(sourceVolumeNode, segmentationNode),
            matrixBetween(sourceVolumeNode),
            parameters.threshold,
        )
