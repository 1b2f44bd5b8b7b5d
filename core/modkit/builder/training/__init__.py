"""The training loop and what it runs on: the engine (steps, accumulation, training checkpoints),
devices and precision, DDP and FSDP, optimizer groups and schedules, a stage's several
objectives, evaluation, kept checkpoints and the resume fingerprint. A new training option
goes here."""
