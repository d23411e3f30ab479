"""Colin27 (`ch2`) T1 MRI with the atlases of Debian's mricron-data, as NRRD + named `.seg.nrrd`.

Every atlas becomes one case whose image is `colin27.nrrd` (ch2 as shipped) and whose
segmentation lies on ch2's grid. `aal` and `brodmann` are on that grid already. The FSL
atlases (Harvard-Oxford, JHU, AICHA) are on the MNI152 grid (182x218x182 at 1 mm, 91x109x91
at 2 mm) and are resampled onto ch2 by nearest neighbour in physical space. Their alignment
with ch2 is that of MNI152 to Colin27, i.e. approximate.

Some of these files carry a NIfTI qform whose y/z offsets are 0 next to a correct sform
(Harvard-Oxford, AICHA); ITK reads the qform and places them 126 mm off. `read_nifti` places
every NIfTI by its sform when it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vessa.errors import InputError
from vessa.io import Segment, Segmentation, Volume, read_volume, write_volume
from vessa.samples.convert import save_case
from vessa.samples.manifest import SampleCase

log = logging.getLogger(__name__)

TEMPLATES = "usr/share/mricron/templates"

# Files of mricron-data that are not converted, kept out of training (DESIGN.md: only the
# named files are used to train and tune; the rest is for independent evaluation).
NOT_EXTRACTED = {
    f"{TEMPLATES}/ch2better.nii.gz": "heldout: 0.5 mm version of ch2 on another grid",
    f"{TEMPLATES}/JHU-WhiteMatter-labels-2mm.nii.gz": "heldout: 2 mm copy of the JHU labels",
    f"{TEMPLATES}/inia19-t1-brain.nii.gz": "heldout: INIA19 macaque template (no label names shipped)",
    f"{TEMPLATES}/inia19-NeuroMaps.nii.gz": "heldout: INIA19 NeuroMaps labels (no label names shipped)",
    f"{TEMPLATES}/jhu189.nii.gz": "heldout: JHU 189 template in another space",
    f"{TEMPLATES}/natbrainlab.nii.gz": "heldout: NatBrainLab tract atlas (no label names shipped)",
}


@dataclass(frozen=True)
class Atlas:
    """One label volume of mricron-data and how its labels are named.

    names_file: text file with lines "<label> <name> [...]"; without one, segments are
    called `<prefix>_<label>`.
    """

    case: str
    filename: str
    description: str
    names_file: str | None = None
    prefix: str = ""
    split: str = "train"


ATLASES = (
    Atlas("aal", "aal.nii.gz", "AAL regions, names from aal.nii.txt", names_file="aal.nii.txt"),
    Atlas("harvardoxford", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
          "Harvard-Oxford cortical max-prob (thr0, 1 mm), resampled from MNI152; the package ships "
          "no label names, so segments are HarvardOxford_<label>", prefix="HarvardOxford"),
    Atlas("jhu", "JHU-WhiteMatter-labels-1mm.nii.gz",
          "JHU white-matter labels (1 mm), resampled from MNI152, names from the .txt",
          names_file="JHU-WhiteMatter-labels-1mm.nii.txt"),
    Atlas("brodmann", "brodmann.nii.gz", "Brodmann areas, segments BA_<area>", prefix="BA"),
    Atlas("aicha", "AICHAmc.nii.gz", "AICHA regions (2 mm), resampled from MNI152, names from the .txt",
          names_file="AICHAmc.nii.txt", split="heldout"),
)


def read_nifti(path: Path) -> Volume:
    """A NIfTI volume placed by its sform when it has one (else as ITK places it)."""
    volume = read_volume(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey("sform_code") or int(reader.GetMetaData("sform_code")) == 0:
        return volume
    sform = np.eye(4)
    sform[:3] = [[float(v) for v in reader.GetMetaData(f"srow_{axis}").split()] for axis in "xyz"]
    placed = Volume.from_ijk_to_ras(volume.array, sform)
    if not placed.same_grid(volume):
        log.info("%s: qform and sform disagree; placed by the sform", path.name)
    return placed


def read_label_names(path: Path) -> dict[int, str]:
    """Label -> name from lines "<label> <name> [code]" (whitespace or tabs); label 0 is skipped."""
    names = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) > 0:
            names[int(fields[0])] = fields[1]
    if not names:
        raise InputError(f"{path}: no '<label> <name>' lines found")
    return names


def onto_grid(label: Volume, reference: Volume) -> Volume:
    """`label` on `reference`'s grid: as is if it is there already, else nearest-neighbour resampled."""
    if reference.same_grid(label):
        return reference.with_array(label.array)
    resampled = sitk.Resample(
        label.to_sitk(), reference.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    return reference.with_array(sitk.GetArrayFromImage(resampled))


def atlas_segmentation(atlas: Atlas, templates: Path, reference: Volume) -> Segmentation:
    """The atlas on `reference`'s grid, one segment per label present, named as `atlas` says."""
    label = onto_grid(read_nifti(templates / atlas.filename), reference)
    present = [int(v) for v in np.unique(label.array) if v != 0]
    if atlas.names_file:
        names = read_label_names(templates / atlas.names_file)
        unnamed = sorted(set(present) - set(names))
        if unnamed:
            raise InputError(f"{atlas.filename}: labels {unnamed[:10]} have no name in {atlas.names_file}")
    else:
        names = {value: f"{atlas.prefix}_{value}" for value in present}
    return Segmentation.from_labelmap(label, names)


def convert_colin27(tree: Path, out: Path) -> Iterator[SampleCase]:
    """ch2 + a brain mask (from ch2bet) + one case per atlas, all on ch2's grid."""
    templates = tree / TEMPLATES
    ch2 = read_nifti(templates / "ch2.nii.gz")
    image = write_volume(ch2, out / "colin27.nrrd")
    brain = onto_grid(read_nifti(templates / "ch2bet.nii.gz"), ch2).array > 0
    yield save_case(out, "colin27_brain", image, Segmentation.on_grid(ch2, [Segment("brain", brain)]), "MR",
                    "Colin27 T1 (ch2) with the brain mask of its skull-stripped version ch2bet")
    for atlas in ATLASES:
        segmentation = atlas_segmentation(atlas, templates, ch2)
        yield save_case(out, f"colin27_{atlas.case}", image, segmentation, "MR",
                        f"Colin27 T1 (ch2) with {atlas.description}", split=atlas.split)
