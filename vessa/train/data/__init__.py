"""Training data: the cohort manifest (`cohort`), its volumes as 2D slices (`slices`), stage-1
episodes (`episodes`) and seeded, resumable batch streams (`batches`)."""
