"""Logic of the VESSA Segment module: no widgets, no dialogs, importable without the module GUI.

`scene_io` converts between scene nodes and `vessa.io` volumes/segmentations; the segmentation
logic, template store and parameters that drive the VESSA model are added next to it.
"""
