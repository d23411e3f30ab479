"""VESSATrain logic: cohort export, training jobs in a background process, progress and plots."""
