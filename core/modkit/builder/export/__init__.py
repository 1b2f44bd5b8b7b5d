"""ONNX export: the graphs (plain, with a key/value cache, encoder-decoder), the exporter an
objective writes through, graph optimization and the int8/fp16 precision checks. A new export
target goes here."""
