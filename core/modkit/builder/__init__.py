"""The build: training stages, checkpoints, Hugging Face checkpoints, ONNX export (torch)."""
