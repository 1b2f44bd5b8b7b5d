"""The neural-network parts backbones are built from: blocks, generation, outputs, losses (torch)."""
