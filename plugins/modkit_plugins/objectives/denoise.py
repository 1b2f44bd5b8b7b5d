"""The `denoise` objective (BART's pretraining); its artifacts serve as `seq2seq`."""
from __future__ import annotations

from pydantic import Field

import modkit


class DenoiseOptions(modkit.Options):
    text_infilling: float = Field(0.3, ge=0, lt=1, description="Share of the tokens in Poisson spans, each span -> one mask token.")
    poisson_lambda: float = Field(3.0, ge=0, description="Mean (λ) of the span lengths of text infilling.")
    sentence_permutation: float = Field(1.0, ge=0, le=1, description="Share of each example's sentences shuffled.")
    token_masking: float = Field(0.0, ge=0, lt=1, description="Chance of each token becoming the mask token.")
    token_deletion: float = Field(0.0, ge=0, lt=1, description="Chance of each token being deleted.")
    document_rotation: float = Field(0.0, ge=0, le=1, description="Chance of an example being rotated to start at a random token.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    holdout: float = Field(0.05, ge=0, lt=1, description="Fraction of the examples held back for evaluation.")
    eval_examples: int = Field(32, ge=0, description="Held-back examples scored by evaluate.")
    max_new_tokens: int = Field(64, gt=0, description="Generation length recorded for `modkit run`.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("denoise", "modkit_plugins.objectives.denoise_impl:Denoise", options=DenoiseOptions,
             doc="BART's denoising: text infilling (Poisson spans), sentence permutation, token masking/deletion, rotation.")
