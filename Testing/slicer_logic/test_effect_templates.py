"""Templates for the VESSA effect: from other volumes in the scene and from a template bank."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from effect_scene import LEVEL, EffectScene, ThresholdPredictor, bright_box_volume, loader_for
from VESSASegmentLib import scene_io
from VESSASegmentLib.bank_logic import BankLogic
from VESSASegmentLib.modality import volumeModality
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.preview_logic import PreviewLogic
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.template_collector import TemplateCollector

from vessa.errors import BankError, InputError
from vessa.io import Segment, Segmentation, TemplateBank, Volume


@pytest.fixture
def scene(slicer_scene) -> EffectScene:
    return EffectScene(scene_io)


def test_templates_come_from_other_volumes_by_name_ignoring_case(scene):
    collection = TemplateCollector().fromScene("LIVER", scene.volumeNode)
    assert [t.case_id for t in collection.templates] == ["template1", "template2"]
    assert collection.warnings == []
    for template, node in zip(collection.templates, scene.templateNodes, strict=True):
        image = slicer.util.arrayFromVolume(node)
        np.testing.assert_array_equal(template.image.array, image)
        np.testing.assert_array_equal(template.mask, image > LEVEL)
        assert template.name == "Liver"


def test_the_target_volume_and_empty_segments_are_never_templates(scene):
    # A second segmentation on the target itself, with a filled liver: not a template.
    own = Segmentation.on_grid(scene.target, [Segment("liver", scene.expected())])
    scene_io.segmentationToNode(own, scene.volumeNode, "target liver")
    # A third volume whose liver segment is empty: skipped.
    empty_image = bright_box_volume(7)
    empty_node = scene_io.volumeToNode(empty_image, "empty case")
    scene_io.segmentationToNode(
        Segmentation.on_grid(empty_image, [Segment("liver", np.zeros(empty_image.shape, bool))]), empty_node
    )
    collection = TemplateCollector().fromScene("liver", scene.volumeNode)
    assert [t.case_id for t in collection.templates] == ["template1", "template2"]


def test_preview_nodes_are_not_template_sources(scene):
    predictor = ThresholdPredictor()
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="x", device="cpu")
    state = logic.start(
        settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    ).wait(10)
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    pairs = TemplateCollector().sceneTemplatePairs(None)
    assert preview.previewNode not in [segmentation for segmentation, _ in pairs]
    preview.remove()


def test_template_mask_is_taken_on_its_volume_grid(slicer_scene):
    """A template segmentation whose own geometry is another (coarser, shifted) grid."""
    scene = EffectScene(scene_io)
    node = scene.templateNodes[0]
    image = scene_io.nodeToVolume(node)
    coarse = Volume(np.zeros((3, 10, 12), np.uint8), spacing=image.spacing * 2, origin=image.origin + image.spacing / 2)
    coarse_node = scene_io.volumeToNode(coarse, "coarse")
    coarse_mask = np.zeros(coarse.shape, bool)
    coarse_mask[1, 2:5, 3:8] = True
    segmentation = Segmentation.on_grid(coarse, [Segment("spleen", coarse_mask)])
    segmentationNode = scene_io.segmentationToNode(segmentation, coarse_node, "coarse spleen")
    # the segmentation belongs to the template volume, but keeps the coarse geometry
    segmentationNode.SetNodeReferenceID(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole(), node.GetID()
    )
    template = TemplateCollector().fromScene("spleen", scene.volumeNode).templates[0]
    assert template.image.shape == image.shape
    # each coarse voxel covers 2 x 2 x 2 fine voxels (coarse centre = corner of 8 fine centres + half)
    expected = np.zeros(image.shape, bool)
    expected[2:4, 4:10, 6:16] = True
    np.testing.assert_array_equal(template.mask, expected)


def test_missing_name_lists_the_names_in_the_scene(scene):
    with pytest.raises(InputError, match=r"no template for 'kidney'.*: Liver$"):
        TemplateCollector().fromScene("kidney", scene.volumeNode)


def test_template_of_another_modality_warns_and_is_used(scene):
    scene.templateNodes[1].SetAttribute("DICOM.Modality", "CT")
    collection = TemplateCollector().fromScene("liver", scene.volumeNode)
    assert len(collection.templates) == 2
    assert collection.warnings == ["template template2/Liver is CT but target is not CT; using it anyway"]
    assert collection.templates[1].modality == "CT"


def test_ct_is_recognised_from_values_without_dicom(scene):
    values = slicer.util.arrayFromVolume(scene.templateNodes[0]).astype(np.int16) - 1024
    slicer.util.updateVolumeFromArray(scene.templateNodes[0], values)
    assert volumeModality(scene.templateNodes[0]) == "CT"
    assert volumeModality(scene.volumeNode) == ""


def test_save_to_bank_and_segment_from_it(scene, tmp_path):
    bank_folder = tmp_path / "bank"
    logic = BankLogic()
    for node, segmentation in zip(scene.templateNodes, scene.templateSegmentations, strict=True):
        logic.save(bank_folder, node, segmentation)
    bank = TemplateBank.open(bank_folder)
    assert [entry.id for entry in bank.entries] == ["template1", "template2"]
    assert bank.names() == ["Liver"]
    # the saved case is the scene's data, voxel for voxel
    saved = bank.templates("liver")[0]
    np.testing.assert_array_equal(saved.image.array, slicer.util.arrayFromVolume(scene.templateNodes[0]))
    np.testing.assert_allclose(saved.image.ijk_to_ras(), scene_io.nodeIjkToRas(scene.templateNodes[0]), atol=1e-9)
    # remove the scene templates: the bank alone now provides them
    for segmentation in scene.templateSegmentations:
        slicer.mrmlScene.RemoveNode(segmentation)
    predictor = ThresholdPredictor()
    segment_logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="x", device="cpu", templateSource="bank", bankFolder=str(bank_folder))
    with pytest.raises(InputError, match="no template"):
        segment_logic.request(
            Parameters(checkpoint="x"), scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]]
        )
    request = segment_logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    assert [t.case_id for t in request.tasks[0].templates] == ["template1", "template2"]
    state = segment_logic.start(settings, request).wait(10)
    np.testing.assert_array_equal(state.results[0].sourceProbability.array, scene.expected())


def test_bank_without_the_name_lists_its_names(scene, tmp_path):
    BankLogic().save(tmp_path, scene.volumeNode, scene.segmentationNode, caseId="target")
    settings = Parameters(checkpoint="x", templateSource="bank", bankFolder=str(tmp_path))
    # the target's own case has 'spleen' and 'tumour' (the empty 'liver' is not saved)
    assert TemplateBank.open(tmp_path).names() == ["spleen", "tumour"]
    with pytest.raises(InputError, match=r"no template named 'liver' in .*; names: spleen, tumour"):
        SegmentLogic().request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])


def test_bank_case_ids_are_file_safe_and_unique(scene, tmp_path):
    scene.templateNodes[0].SetName("Patient 1 / CT (arterial)")
    segmentation = scene.templateSegmentations[0]
    first = BankLogic().save(tmp_path, scene.templateNodes[0], segmentation)
    second = BankLogic().save(tmp_path, scene.templateNodes[0], segmentation)
    assert (first.id, second.id) == ("Patient_1_CT_arterial", "Patient_1_CT_arterial-2")
    assert BankLogic.caseIdFor("...", []) == "case"


def test_saving_an_empty_segmentation_is_refused(scene, tmp_path):
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    empty.GetSegmentation().AddEmptySegment("", "liver")
    with pytest.raises(BankError, match="no non-empty segment"):
        BankLogic().save(tmp_path, scene.volumeNode, empty)
    with pytest.raises(BankError, match="not a template bank"):
        BankLogic.open(tmp_path / "nothing")
