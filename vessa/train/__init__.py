"""Training: one `Trainer` loop (`trainer`); each method (`methods/`: stage 1, supervised,
UniMatch V2, VESSA in the loop, DuSSS) is an `Objective` (`objective`) built from shared parts:
data (`data/`), `augment`, `losses`, `metrics` (the one Dice), the EMA teacher (`ema`) and the
stage-2 student network (`student`)."""
