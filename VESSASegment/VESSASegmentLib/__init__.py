"""Logic of the VESSA Segment module: no widgets, no dialogs, importable without the module GUI.

`scene_io` converts between scene nodes and `vessa.io` volumes/segmentations. The "VESSA"
Segment Editor effect's logic is one class per file: `parameters`, `template_collector` (with
`terminology`: which segments are the same structure),
`segment_logic` + `auto_segment_job` (model behind the `predictor` Protocol), `preview_logic`
with `confidence_overlay` and `slice_navigator`, `apply_logic` + `segment_modifier`,
`bank_logic`, `dependency_logic`, `checkpoint_catalog`. Template source "drawn" (few-slice
completion): `drawn_slice_collector`, `drawn_slice_memory`, `completer_loader`. `sample_data`
registers the sample sets with Slicer's Sample Data module.
"""
