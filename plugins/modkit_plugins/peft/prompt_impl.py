"""Prompt tuning (Lester et al. 2021) through the backbone's input slot (:mod:`modkit.nn.prompt`).

The method's one module holds the virtual tokens' embeddings (P, D) in the token-embedding
space the backbone declares; the core prepends them (to the encoder's input in an
encoder-decoder, as Hugging Face PEFT does). Merging freezes them to a constant buffer: the
exported graphs carry them, the backbone computing as it trained. Hugging Face PEFT's
``PROMPT_TUNING`` folders hold the same matrix as ``prompt_embeddings``.
"""
from __future__ import annotations

import torch
from torch import nn

from modkit.errors import UserError
from modkit.interfaces import PeftMethod, capabilities_of
from modkit.nn.prompt import attach_prompt, prompt_of


class VirtualTokens(nn.Module):
    """``forward() -> (P, D)``: the prompt's embeddings, trained (a parameter) or frozen (a buffer)."""

    def __init__(self, length: int, d_model: int):
        super().__init__()
        self.length = length
        self.weight = nn.Parameter(torch.empty(length, d_model))

    def forward(self) -> torch.Tensor:
        return self.weight

    @torch.no_grad()
    def freeze(self) -> None:
        if isinstance(self.weight, nn.Parameter):
            value = self.weight.detach().clone()
            del self.weight
            self.register_buffer("weight", value)


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "backbone", model)


class PromptTuning(PeftMethod):
    identity_at_init = False  # virtual tokens change what every token attends to from the start
    merges = False  # merging freezes them; they stay in the graph

    def apply(self, model: nn.Module) -> list[nn.Module]:
        backbone, o = _backbone(model), self.options
        caps = capabilities_of(backbone)
        if caps.token_embedding is None or not caps.takes("inputs_embeds"):
            raise UserError(f"prompt: {type(backbone).__name__} does not declare inputs_embeds and its token_embedding "
                            "(BackboneCapabilities); prompt tuning needs both")
        embedding = getattr(backbone, caps.token_embedding)
        module = VirtualTokens(o.num_virtual_tokens, embedding.embedding_dim).to(embedding.weight.device,
                                                                                 embedding.weight.dtype)
        self._initialise(module, backbone, embedding)
        attach_prompt(backbone, module)
        return [module]

    @torch.no_grad()
    def _initialise(self, module: VirtualTokens, backbone: nn.Module, embedding: nn.Embedding) -> None:
        o, p = self.options, module.length
        if o.init == "random":
            std = 0.02 if embedding.weight.is_meta else float(embedding.weight.std())
            nn.init.normal_(module.weight, std=std)
            return
        if o.init == "vocab":
            ids = torch.randint(0, embedding.num_embeddings, (p,), device=embedding.weight.device)
        else:
            if self.tokenizer is None and embedding.weight.is_meta:
                return  # a shape-only rehearsal before the tokenizer exists: no values to set
            if self.tokenizer is None:
                raise UserError('prompt: init = "text" needs the tokenizer, which this build does not give')
            ids = self.tokenizer.encode(o.init_text)
            if not ids:
                raise UserError(f"prompt: init_text {o.init_text!r} has no tokens")
            ids = torch.tensor((ids * -(-p // len(ids)))[:p], device=embedding.weight.device)  # repeated or cut
        module.weight.copy_(backbone.embed_tokens(ids[None])[0])

    def merge(self, model: nn.Module) -> None:
        """Freeze the virtual tokens to a constant; the backbone keeps prepending them."""
        prompt = prompt_of(_backbone(model))
        if isinstance(prompt, VirtualTokens):
            prompt.freeze()

    @classmethod
    def to_hf_peft(cls, model: nn.Module, hf_weights: dict, hf_config: dict):
        """The virtual tokens as a Hugging Face PEFT PROMPT_TUNING folder. An encoder-decoder's
        file holds P more rows, PEFT's decoder prompts, which its forward never reads: zeros."""
        prompt = prompt_of(_backbone(model))
        if not isinstance(prompt, VirtualTokens):
            return None
        weight = prompt().detach()
        seq2seq = bool(hf_config.get("is_encoder_decoder"))
        architecture = (hf_config.get("architectures") or [""])[0]
        task = ("SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM" if architecture.endswith(("LMHeadModel", "ForCausalLM"))
                else "FEATURE_EXTRACTION")
        config = {"peft_type": "PROMPT_TUNING", "task_type": task, "num_virtual_tokens": prompt.length,
                  "token_dim": weight.shape[1], "num_transformer_submodules": 2 if seq2seq else 1,
                  "prompt_tuning_init": "RANDOM", "inference_mode": True, "base_model_name_or_path": None}
        rows = torch.cat([weight, torch.zeros_like(weight)]) if seq2seq else weight
        return config, {"prompt_embeddings": rows.contiguous()}

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: nn.Module):
        """A Hugging Face PEFT PROMPT_TUNING folder: its ``prompt_embeddings``' first
        ``num_virtual_tokens`` rows (the encoder's, in an encoder-decoder)."""
        from modkit_plugins.peft.prompt import PromptOptions

        if config.get("peft_type") != "PROMPT_TUNING":
            return None
        rows = weights.get("prompt_embeddings")
        if rows is None:
            raise UserError("PROMPT_TUNING adapter: no prompt_embeddings in adapter_model.safetensors")
        p = int(config["num_virtual_tokens"])
        method = cls(PromptOptions(num_virtual_tokens=p))
        modules = method.apply(model)
        width = modules[0].weight.shape[1]
        if rows.dim() != 2 or rows.shape[1] != width or rows.shape[0] < p:
            raise UserError(f"PROMPT_TUNING adapter: prompt_embeddings {tuple(rows.shape)} do not fit {p} virtual "
                            f"tokens of width {width}")
        with torch.no_grad():
            modules[0].weight.copy_(rows[:p])
        return method, modules
