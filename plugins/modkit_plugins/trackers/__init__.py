"""Built-in trackers: TensorBoard and MLflow, imported only when a build chooses them."""
