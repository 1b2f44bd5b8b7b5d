"""What an objective's ``export`` receives: the folder, the ``[export]`` options, and the
standard graphs, each written through :func:`modkit.builder.export.onnx.onnx_export` and checked
against torch before it counts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from modkit.builder.export.onnx import ParityError, check_parity, export_onnx, onnx_export
from modkit.builder.export.cached import check_with_past, export_with_past
from modkit.builder.export.seq2seq import export_seq2seq
from modkit.interfaces import capabilities_of
from modkit.nn.prompt import reserved_positions


@dataclass
class Exporter:
    folder: Path
    opset: int = 17
    #: the largest max abs difference between onnxruntime and torch a graph may show
    tolerance: float = 1e-4
    #: optimisation level of every graph written (see :mod:`modkit.builder.export.optimize`); the
    #: parity checks run on the optimised graphs
    optimize: str = "none"
    #: the files written so far, in order; the build records them in the manifest
    written: list[str] = field(default_factory=list)

    def onnx(self, module: torch.nn.Module, args: Sequence[torch.Tensor], file: str, *, input_names: list[str],
             output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> Path:
        """Any other graph: trace ``module(*args)`` into ``folder/file`` (no parity check:
        the caller compares it with torch and raises :class:`ParityError`)."""
        path = onnx_export(module, args, self.folder / file, input_names=input_names, output_names=output_names,
                           dynamic_axes=dynamic_axes, opset=self.opset, optimize=self.optimize)
        self.written.append(file)
        return path

    def logits_graph(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     file: str = "model.onnx") -> dict[str, Any]:
        """``(input_ids, attention_mask) -> logits`` of ``model(...).logits``, compared with
        torch at every real position of ``inputs``."""
        export_onnx(model, inputs, self.folder / file, opset=self.opset, optimize=self.optimize)
        self.written.append(file)
        return check_parity(model, self.folder / file, inputs, tolerance=self.tolerance)

    def cached_decoder(self, backbone: torch.nn.Module, prompt: list[int], *,
                       max_new_tokens: int = 16) -> dict[str, Any]:
        """``model_with_past.onnx``, one cached step of a
        :class:`~modkit.interfaces.CachedDecoder`; its greedy tokens from ``prompt`` must be
        torch's and its logits within the tolerance."""
        path = export_with_past(backbone, self.folder, opset=self.opset, optimize=self.optimize)
        self.written.append(path.name)
        # learned positions end at the declared max_positions (which the runtime reads too): a
        # checkpoint with few of them is checked on the steps it has, not failed by the check itself
        limit = positions_left(backbone)
        if limit is not None:
            prompt = prompt[:max(1, limit - 1)]
            max_new_tokens = max(1, min(max_new_tokens, limit - len(prompt)))
        return check_with_past(backbone, path, prompt, max_new_tokens=max_new_tokens, tolerance=self.tolerance)

    def encoder_decoder(self, backbone: torch.nn.Module, inputs: dict[str, torch.Tensor], *,
                        max_new_tokens: int = 16, decoder_start_token_id: int | None = None,
                        eos_token_id: int | None = None) -> dict[str, Any]:
        """``encoder.onnx`` + ``decoder.onnx`` of an :class:`~modkit.interfaces.EncoderDecoder`;
        the encoder output and every greedy step's logits within the tolerance, the greedy
        tokens equal to torch's."""
        limit = positions_left(backbone)  # decoding k tokens feeds the decoder positions 0..k-1
        max_new_tokens = max_new_tokens if limit is None else max(1, min(max_new_tokens, limit))
        figures = export_seq2seq(backbone, self.folder, inputs, max_new_tokens=max_new_tokens,
                                 decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id,
                                 opset=self.opset, optimize=self.optimize)
        self.written += figures["files"]
        worst = max(figures["encoder_max_abs_diff"], figures["decoder_logits_max_abs_diff"])
        if not worst <= self.tolerance or not figures["greedy_tokens_equal"]:
            raise ParityError(f"ONNX parity check failed: max abs difference {worst:.3g} (tolerance "
                              f"{self.tolerance:g}), greedy tokens equal: {figures['greedy_tokens_equal']}")
        return {"max_abs_diff": worst, "tolerance": self.tolerance,
                "inputs": {k: list(v.shape) for k, v in inputs.items()}, **figures}


def positions_left(backbone: torch.nn.Module) -> int | None:
    """How many positions the backbone's tokens may take: its declared ``max_positions`` less
    those PEFT methods reserve (an input prompt's virtual tokens); None: no limit."""
    limit = capabilities_of(backbone).max_positions
    return None if limit is None else limit - reserved_positions(backbone)
