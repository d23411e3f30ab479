"""Templates matched by Slicer terminology, the name as the fallback, on a real (headless) scene."""

from __future__ import annotations

import pytest
import slicer
from effect_scene import LEVEL, EffectScene, ThresholdPredictor, bright_box_volume, loader_for
from terminology_entries import LEBER, LIVER, SPLEEN, TISSUE
from VESSASegmentLib import scene_io
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.template_collector import TemplateCollector
from VESSASegmentLib.terminology import Structure

from vessa.errors import InputError
from vessa.io import Segment, Segmentation


def test_a_structure_matches_by_terminology_then_by_name():
    assert Structure("Liver", LIVER).matches(Structure("Leber", LEBER))
    assert not Structure("Liver", LIVER).matches(Structure("liver", SPLEEN))
    assert Structure("Left_Lung").matches(Structure("left  lung", TISSUE))


def add_template(name: str, terminology: str, number: int):
    """Another volume with one filled segment `name` carrying `terminology`."""
    image = bright_box_volume(number)
    node = scene_io.volumeToNode(image, f"case{number}")
    segmentationNode = scene_io.segmentationToNode(
        Segmentation.on_grid(image, [Segment(name, image.array > LEVEL)]), node, f"case{number} segmentation")
    segmentation = segmentationNode.GetSegmentation()
    segmentation.GetSegment(segmentation.GetSegmentIDs()[0]).SetTerminology(terminology)
    return node


@pytest.fixture
def scene(slicer_scene) -> EffectScene:
    """The effect scene without its two name-matched 'Liver' templates, its target liver coded."""
    scene = EffectScene(scene_io)
    for node in scene.templateSegmentations:
        slicer.mrmlScene.RemoveNode(node)
    segmentation = scene.segmentationNode.GetSegmentation()
    segmentation.GetSegment(scene.ids["liver"]).SetTerminology(LIVER)
    return scene


def test_scene_templates_are_found_by_terminology_then_by_name(scene):
    add_template("Leber", LEBER, 1)  # localized name, same code
    add_template("liver parenchyma", LIVER, 2)  # another name, same code
    add_template("LIVER", TISSUE, 3)  # no specific code: the name decides
    add_template("Liver", SPLEEN, 4)  # the name says liver, the code says spleen: not a liver
    add_template("Milz", SPLEEN, 5)
    liver = Structure.ofSegment(scene.segmentationNode.GetSegmentation().GetSegment(scene.ids["liver"]))
    collection = TemplateCollector().fromScene(liver, scene.volumeNode)
    assert [t.case_id for t in collection.templates] == ["case1", "case2", "case3"]
    assert TemplateCollector().hasSceneTemplates(liver, scene.volumeNode)


def test_the_effect_runs_on_templates_found_by_terminology(scene):
    add_template("Leber", LEBER, 1)
    predictor = ThresholdPredictor()
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="x", device="cpu")
    request = logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    assert [t.case_id for t in request.tasks[0].templates] == ["case1"]
    assert request.tasks[0].text == "liver"  # the prompt is still the segment's own name


def test_no_match_names_what_there_is(scene):
    add_template("Milz", SPLEEN, 1)
    liver = Structure.ofSegment(scene.segmentationNode.GetSegmentation().GetSegment(scene.ids["liver"]))
    with pytest.raises(InputError, match="no template for 'liver'.*name or terminology.*Milz"):
        TemplateCollector().fromScene(liver, scene.volumeNode)


def test_bank_templates_are_found_by_terminology_saved_from_the_scene(scene, tmp_path):
    from VESSASegmentLib.bank_logic import BankLogic

    template = add_template("Leber", LEBER, 1)
    segmentationNode = next(node for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
                            if node.GetNodeReference("referenceImageGeometryRef") is template)
    BankLogic().save(tmp_path / "bank", template, segmentationNode)
    bank = BankLogic.open(tmp_path / "bank")
    liver = Structure.ofSegment(scene.segmentationNode.GetSegmentation().GetSegment(scene.ids["liver"]))
    collection = TemplateCollector().collect(liver, scene.volumeNode, bank)
    assert [(t.case_id, t.name) for t in collection.templates] == [("case1", "Leber")]
    with pytest.raises(InputError, match="no template named 'liver'.*terminology"):
        TemplateCollector().collect(Structure("liver", SPLEEN), scene.volumeNode, bank)
