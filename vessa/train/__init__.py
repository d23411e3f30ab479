"""Training: one `Trainer` loop; each method (supervised, stage 1, UniMatch V2, DuSSS) is an
`Objective` built from shared parts (EMA teacher, cohort slices, MONAI losses)."""
