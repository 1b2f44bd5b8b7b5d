"""Built-in optimizers and learning-rate schedules."""
