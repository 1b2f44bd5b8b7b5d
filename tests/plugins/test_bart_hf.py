"""BART against transformers: forward parity with padded batches, generation, round trips."""
import pytest
import torch
from safetensors.torch import save_file

from encdec_reference import (GENERATION_CASES, assert_cached_steps_match_forward, assert_generate_matches,
                              forward_both, hf_bart, load_with_modkit, max_diff, padded_batch)
from modkit.builder.hf.convert import save_hf
from modkit.errors import ArtifactError
from specs import build_from_checkpoint

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bart")
    hf = hf_bart(folder)
    return hf, load_with_modkit(folder), folder


def batch(hf):
    ids, mask = padded_batch(hf.config.vocab_size, [7, 4, 6], hf.config.pad_token_id)
    dec_ids, dec_mask = padded_batch(hf.config.vocab_size, [5, 2, 5], hf.config.pad_token_id, seed=2)
    return ids, mask, dec_ids, dec_mask


def test_logits_and_every_hidden_state_match_transformers(pair):
    hf, ours, _ = pair
    theirs, mine = forward_both(hf, ours, *batch(hf), output_hidden_states=True)
    assert max_diff(mine.logits, theirs.logits) < 1e-5
    assert max_diff(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state) < 1e-5
    assert len(mine.encoder_hidden_states) == 3 and len(mine.decoder_hidden_states) == 4
    assert max_diff(mine.encoder_hidden_states, theirs.encoder_hidden_states) < 1e-5
    assert max_diff(mine.decoder_hidden_states, theirs.decoder_hidden_states) < 1e-5


def test_attentions_match_transformers(pair):
    hf, ours, _ = pair
    theirs, mine = forward_both(hf, ours, *batch(hf), output_attentions=True)
    for name in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        assert max_diff(getattr(mine, name), getattr(theirs, name)) < 1e-5, name


def test_decoder_inputs_default_to_shifted_input_ids(pair):
    hf, ours, _ = pair
    ids, mask, *_ = batch(hf)
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits) < 1e-5


def test_cached_decoding_matches_full_forward(pair):
    hf, ours, _ = pair
    ids, mask, dec_ids, _ = batch(hf)
    assert_cached_steps_match_forward(ours, ids, mask, dec_ids)


@pytest.mark.parametrize("num_beams,extra", GENERATION_CASES)
def test_generate_matches_transformers_and_cache_changes_nothing(pair, num_beams, extra):
    hf, ours, _ = pair
    ids, mask = padded_batch(hf.config.vocab_size, [7, 4, 6, 5], hf.config.pad_token_id)
    assert_generate_matches(hf, ours, ids, mask, num_beams=num_beams, extra=extra, pad_token_id=1,
                            decoder_start_token_id=2)


def test_seeded_sampling_is_reproducible(pair):
    _, ours, _ = pair
    ids, mask = padded_batch(99, [7, 4], 1)
    draw = lambda seed: ours.generate(ids, mask, max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9,
                                      temperature=1.5, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_export_and_reload_is_identical_and_transformers_reads_it(pair, tmp_path):
    from transformers import BartForConditionalGeneration

    hf, ours, _ = pair
    save_hf(ours, tmp_path / "out")
    again = load_with_modkit(tmp_path / "out")
    reread = BartForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    ids, mask, dec_ids, dec_mask = batch(hf)
    with torch.no_grad():
        expected = ours(ids, mask, dec_ids, dec_mask).logits
        assert torch.equal(again(ids, mask, dec_ids, dec_mask).logits, expected)
        got = reread(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                     decoder_attention_mask=dec_mask).logits
    assert max_diff(got, expected) < 1e-5


def test_unknown_weight_names_are_listed(pair, tmp_path):
    from safetensors.torch import load_file

    _, _, folder = pair
    weights = load_file(str(folder / "model.safetensors"))
    weights["model.encoder.layers.0.mystery.weight"] = torch.zeros(2)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"1 weight name\(s\) not recognised: model\.encoder\.layers\.0\.mystery"):
        load_with_modkit(tmp_path)


def test_sequence_classification_head_matches_transformers(tmp_path):
    hf = hf_bart(tmp_path, sequence_classification=True)
    ours = load_with_modkit(tmp_path)
    ids, mask = padded_batch(99, [6, 6, 6], 1, avoid=(2,))
    ids[:, 5] = 2  # one eos per row, at the end
    with torch.no_grad():
        assert max_diff(ours.classify(ids, mask), hf(input_ids=ids, attention_mask=mask).logits) < 1e-5
    with pytest.raises(ValueError, match="same number"):
        ours.classify(ids[:, :5], mask[:, :5])


def test_checkpoint_with_few_positions_builds_seq2seq(tmp_path):
    # the export check decodes max_new_tokens (16 by default) greedily: a checkpoint with 10
    # decoder positions is checked on the 10 it has instead of failing in onnxruntime
    import json

    import modkit

    rows = [{"source": f"w{i} w{i + 1}", "target": f"w{i + 2}"} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "corpus.txt").write_text(" ".join(f"w{i}" for i in range(30)))
    comp = modkit.get_registry().get("tokenizer", "bpe")
    tok = comp.load().train([tmp_path / "corpus.txt"], comp.options(vocab_size=60, special_tokens={
        "bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}))
    ids = {r: tok.special_id(r) for r in ("bos", "pad", "eos")}
    folder = tmp_path / "hf"
    hf_bart(folder, vocab_size=tok.vocab_size, max_position_embeddings=10, bos_token_id=ids["bos"],
            pad_token_id=ids["pad"], eos_token_id=ids["eos"], decoder_start_token_id=ids["eos"])
    tok.save(folder / "tokenizer.json")
    manifest = build_from_checkpoint(tmp_path, folder, '{ use = "seq2seq" }', "train.jsonl", 8)
    assert manifest["parity"]["greedy_tokens_equal"]
    # served: a source longer than the positions is cut, and decoding stops at the last position
    from modkit.runtime import Runtime

    [long_source] = Runtime(tmp_path / "out").run([" ".join(f"w{i}" for i in range(25))], max_new_tokens=30)
    assert 1 <= len(long_source["ids"]) <= 10


def test_layer_norm_eps_transformers_cannot_express_is_refused_on_export(tmp_path):
    # transformers' BART always uses 1e-5: writing another epsilon would change the outputs
    import modkit

    comp = modkit.get_registry().get("backbone", "bart")
    options = dict(vocab_size=30, d_model=8, n_heads=2, encoder_layers=1, decoder_layers=1, n_positions=16)
    with pytest.raises(ArtifactError, match="layer_norm_eps = 1e-06"):
        save_hf(comp.load()(comp.options(**options, layer_norm_eps=1e-6)), tmp_path / "out")
    save_hf(comp.load()(comp.options(**options)), tmp_path / "ok")
