"""Random tiny transformers encoder-decoders saved as safetensors folders: the references
the BART and T5 tests compare modkit against."""
from __future__ import annotations

import torch

BART_CONFIG = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=3,
                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                   decoder_ffn_dim=37, max_position_embeddings=64, forced_eos_token_id=None)
T5_CONFIG = dict(vocab_size=101, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
                 num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20)


def hf_bart(folder, *, sequence_classification: bool = False, **overrides):
    """A transformers BART with random weights (and a random final_logits_bias), saved."""
    from transformers import BartConfig, BartForConditionalGeneration, BartForSequenceClassification

    torch.manual_seed(0)
    config = BartConfig(**{**BART_CONFIG, **overrides}, attn_implementation="eager")
    if sequence_classification:
        model = BartForSequenceClassification(BartConfig(**{**BART_CONFIG, **overrides}, num_labels=3))
    else:
        model = BartForConditionalGeneration(config)
        model.final_logits_bias.normal_()
    model.save_pretrained(folder, safe_serialization=True)
    return model.eval()


def hf_t5(folder, version: str, **overrides):
    """A transformers T5 v1.0 (relu, tied, rescaled) or v1.1 (gated-gelu) with random weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    variant = dict(feed_forward_proj="relu") if version == "1.0" else dict(
        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    config = T5Config(**{**T5_CONFIG, **variant, **overrides}, attn_implementation="eager")
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(folder, safe_serialization=True)
    return model.eval()


def padded_batch(vocab_size: int, lengths: list[int], pad: int, *, avoid=(), seed: int = 1):
    """Right-padded random ids (B, max(lengths)) and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (len(lengths), max(lengths)), generator=g)
    for a in avoid:
        ids[ids == a] = a + 1
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def hf_generate(model, input_ids, attention_mask, **kwargs):
    """transformers' generate with the given arguments; what they leave unset comes from the
    model's generation config, as for any user (``hf_bart`` turns BART's forced eos off)."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, **kwargs)
    with torch.no_grad():
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)


def load_with_modkit(folder):
    """The folder through modkit's registered checkpoint format for its model_type.

    (Same dispatch as modkit.load_model, reading the safetensors file directly.)
    """
    from safetensors.torch import load_file

    from modkit.builder.hf.convert import read_config
    from modkit.registry import get_registry, import_object

    config = read_config(folder)
    fmt = import_object(get_registry().checkpoint_formats[config["model_type"]][1])()
    return fmt.from_hf(config, load_file(str(folder / "model.safetensors")))


def max_diff(ours, theirs) -> float:
    """Largest absolute difference between two tensors or two equal-length tuples of them."""
    if isinstance(theirs, torch.Tensor):
        return (ours - theirs).abs().max().item()
    assert len(ours) == len(theirs)
    return max(max_diff(a, b) for a, b in zip(ours, theirs))


def forward_both(hf, ours, ids, mask, dec_ids, dec_mask, **flags):
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                    decoder_attention_mask=dec_mask, **flags)
        mine = ours(ids, mask, dec_ids, dec_mask, **flags)
    return theirs, mine


#: (num_beams, extra generate arguments) checked against transformers
GENERATION_CASES = [
    (1, {}),
    (3, {}),
    (3, dict(length_penalty=0.5, early_stopping=True)),
    (3, dict(length_penalty=2.0, early_stopping="never")),
    (2, dict(length_penalty=-1.0)),
]


def assert_cached_steps_match_forward(model, ids, mask, dec_ids):
    """Decoding one token at a time through the cache gives the full forward's logits."""
    with torch.no_grad():
        full = model(ids, mask, dec_ids).logits
        enc = model.encode(ids, mask)
        cache, steps = None, []
        for t in range(dec_ids.shape[1]):
            logits, cache = model.decode_step(dec_ids[:, t:t + 1], enc, mask, cache)
            steps.append(logits)
    assert max_diff(torch.stack(steps, 1), full) < 1e-5


def assert_generate_matches(hf, ours, ids, mask, *, num_beams, extra, hf_cache=True, **ids_args):
    """modkit's generate gives transformers' tokens, with and without its cache, for an eos
    the model actually produces (so rows and beams finish at different steps)."""
    eos = int(hf_generate(hf, ids, mask, max_new_tokens=6, use_cache=hf_cache, **ids_args)[0, 4])
    args = dict(max_new_tokens=10, num_beams=num_beams, eos_token_id=eos, **ids_args, **extra)
    mine = ours.generate(ids, mask, **args)
    assert torch.equal(mine, hf_generate(hf, ids, mask, use_cache=hf_cache, **args))
    assert torch.equal(ours.generate(ids, mask, use_cache=False, **args), mine)
