"""What every encoder-decoder backbone does the same way: ``encode``, ``decode_step``,
``forward`` and ``generate``, from a family's two stacks.

A family subclasses :class:`EncoderDecoderModel` and gives ``run_encoder`` and
``run_decoder`` (each returning :func:`modkit.nn.blocks.run_blocks`' tuple) and
``lm_logits``; the base then meets :class:`modkit.interfaces.EncoderDecoder`. Embeddings,
positions, masks and norms stay the family's own.
"""
from __future__ import annotations

import torch
from torch import nn

from modkit.interfaces import Backbone
from modkit.nn.generation import Seq2SeqGenerationMixin
from modkit.nn.outputs import ModelOutput
from modkit.nn.prompt import extend_mask, prompt_of, with_prompt


def shift_tokens_right(ids: torch.Tensor, pad_token_id: int, start_token_id: int) -> torch.Tensor:
    """Decoder inputs from targets: the start token, then the targets minus their last token."""
    shifted = ids.new_full(ids.shape, start_token_id)
    shifted[:, 1:] = ids[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)  # -100 marks ignored labels


class EncoderDecoderModel(nn.Module, Seq2SeqGenerationMixin, Backbone):
    """An encoder-decoder made of :class:`modkit.nn.blocks.Block` stacks (the decoder's in
    ``self.decoder_blocks``, with cross-attention)."""

    is_decoder = True
    is_encoder_decoder = True

    def run_encoder(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                    inputs_embeds: torch.Tensor | None = None, **outputs):
        """(x, hidden states, attentions, None, None) of the encoder, as ``run_blocks`` returns;
        ``inputs_embeds`` (when the family declares them) replace ``embed_tokens(input_ids)``;
        ``outputs``: ``output_hidden_states``, ``output_attentions``."""
        raise NotImplementedError

    def _encoder(self, input_ids, attention_mask, inputs_embeds=None, **outputs):
        """``run_encoder``, with the input prompt's virtual tokens first when the slot holds one
        (see :mod:`modkit.nn.prompt`): its output then has P more positions than the mask."""
        prompt = prompt_of(self)
        if prompt is not None:
            embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
            inputs_embeds, attention_mask = with_prompt(prompt, embeds, attention_mask)
            input_ids = None
        if inputs_embeds is None:  # a family's run_encoder need not take them
            return self.run_encoder(input_ids, attention_mask, **outputs)
        return self.run_encoder(input_ids, attention_mask, inputs_embeds=inputs_embeds, **outputs)

    def _source_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The source mask over what the encoder returned: the prompt's positions come first."""
        prompt = prompt_of(self)
        return attention_mask if prompt is None else extend_mask(attention_mask, prompt.length)

    def run_decoder(self, decoder_input_ids: torch.Tensor, encoder_hidden: torch.Tensor,
                    attention_mask: torch.Tensor | None, decoder_attention_mask: torch.Tensor | None = None,
                    past: list | None = None, **outputs):
        """(x, hidden states, self-attentions, cross-attentions, cache) of the decoder over
        ``encoder_hidden``; ``past`` holds what earlier steps cached; ``outputs`` adds
        ``use_cache``."""
        raise NotImplementedError

    def default_decoder_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's inputs when ``forward`` is given none: ``input_ids`` shifted right (so
        a classifier can read the decoder, as BART's does)."""
        return shift_tokens_right(input_ids, self.config.pad_token_id, self.config.decoder_start_token_id)

    def encode(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's last hidden state (B, S, D), or (B, P + S, D) with an input prompt."""
        return self._encoder(input_ids, attention_mask, inputs_embeds)[0]

    def cross_kv(self, encoder_hidden: torch.Tensor) -> list:
        """Every decoder layer's cross-attention (keys, values) of the encoder output."""
        return [block.cross.project_kv(encoder_hidden) for block in self.decoder_blocks]

    def decode_step(self, decoder_input_ids, encoder_hidden, attention_mask=None, past=None,
                    use_cache: bool = True):
        """Logits (B, V) for the position after ``decoder_input_ids``, and the new cache."""
        x, *_, cache = self.run_decoder(decoder_input_ids, encoder_hidden, self._source_mask(attention_mask), past=past,
                                        use_cache=use_cache)
        return self.lm_logits(x[:, -1]), cache

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Encoder (unless ``encoder_outputs``, its last hidden state, is given) then decoder,
        with transformers' output fields. ``inputs_embeds`` replace ``embed_tokens(input_ids)``
        on the encoder side (then ``decoder_input_ids`` must be given)."""
        if decoder_input_ids is None:
            decoder_input_ids = self.default_decoder_inputs(input_ids)
        flags = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        enc_hidden = enc_attn = None
        if encoder_outputs is None:
            encoder_outputs, enc_hidden, enc_attn, _, _ = self._encoder(input_ids, attention_mask, inputs_embeds,
                                                                        **flags)
        x, dec_hidden, dec_attn, cross_attn, cache = self.run_decoder(
            decoder_input_ids, encoder_outputs, self._source_mask(attention_mask), decoder_attention_mask,
            past=past_key_values, use_cache=use_cache, **flags)
        return ModelOutput(
            last_hidden_state=x, logits=self.lm_logits(x), past_key_values=cache,
            encoder_last_hidden_state=encoder_outputs, encoder_hidden_states=enc_hidden,
            encoder_attentions=enc_attn, decoder_hidden_states=dec_hidden,
            decoder_attentions=dec_attn, cross_attentions=cross_attn,
        )
