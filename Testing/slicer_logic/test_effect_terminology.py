"""Templates matched by Slicer terminology, the name as the fallback, on a real (headless) scene."""

from __future__ import annotations

import pytest
import slicer
from effect_scene import LEVEL, EffectScene, ThresholdPredictor, bright_box_volume, loader_for
from VESSASegmentLib import scene_io
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.template_collector import TemplateCollector
from VESSASegmentLib.terminology import Structure, terminologyCodes

from vessa.errors import InputError
from vessa.io import Segment, Segmentation


def entry(code: str, meaning: str, region: str = "^^") -> str:
    """A terminology entry as Slicer's terminology selector writes it."""
    return (f"Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
            f"~SCT^{code}^{meaning}~^^~Anatomic codes - DICOM master list~{region}~^^")


LIVER = entry("10200004", "Liver")
LEBER = entry("10200004", "Leber")  # the same code, a German meaning
SPLEEN = entry("78961009", "Spleen")
MASS_IN_LIVER = entry("4147007", "Mass", region="SCT^10200004^Liver")
MASS_IN_LUNG = entry("4147007", "Mass", region="SCT^39607008^Lung")
TISSUE = entry("85756007", "Tissue")  # Slicer's default for a new segment


@pytest.mark.parametrize(("a", "b", "same"), [
    (Structure("Liver", terminologyCodes(LIVER)), Structure("Leber", terminologyCodes(LEBER)), True),
    (Structure("Liver", terminologyCodes(LIVER)), Structure("liver parenchyma", terminologyCodes(LIVER)), True),
    (Structure("Liver", terminologyCodes(LIVER)), Structure("liver", terminologyCodes(SPLEEN)), False),
    (Structure("Liver", terminologyCodes(LIVER)), Structure("LIVER", terminologyCodes(TISSUE)), True),
    (Structure("liver", terminologyCodes(TISSUE)), Structure("spleen", terminologyCodes(TISSUE)), False),
    (Structure("Left_Lung"), Structure("left  lung"), True),
    (Structure("mass", terminologyCodes(MASS_IN_LIVER)), Structure("mass", terminologyCodes(MASS_IN_LUNG)), False),
])
def test_structures_match_by_codes_when_both_have_them_else_by_name(a, b, same):
    assert a.matches(b) is same and b.matches(a) is same


@pytest.mark.parametrize("text", ["", "not an entry", "a~b~^^~^^", TISSUE])
def test_empty_malformed_and_generic_entries_have_no_codes(text):
    assert terminologyCodes(text) is None


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
