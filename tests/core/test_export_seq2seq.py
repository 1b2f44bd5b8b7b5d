"""encoder.onnx + decoder.onnx: onnxruntime greedy generation equals torch's, on shapes other
than the ones traced."""
import sys
from pathlib import Path

import pytest

from modkit.builder.export.seq2seq import export_seq2seq
from modkit.runtime.seq2seq import generate_onnx, strip_after_eos

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).parents[1] / "plugins"))
from encdec_reference import hf_bart, hf_t5, load_with_modkit, padded_batch  # noqa: E402


@pytest.fixture(scope="module", params=["bart", "t5-1.0", "t5-1.1"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf = hf_bart(folder) if request.param == "bart" else hf_t5(folder, request.param[3:])
    model = load_with_modkit(folder)
    ids, mask = padded_batch(hf.config.vocab_size, [6, 3], hf.config.pad_token_id)
    parity = export_seq2seq(model, folder / "onnx", dict(input_ids=ids, attention_mask=mask), max_new_tokens=6)
    return model, folder / "onnx", parity


def test_parity_figures_cover_both_graphs_and_greedy_tokens(exported):
    model, out, parity = exported
    assert parity["files"] == ["encoder.onnx", "decoder.onnx"] and parity["opset"] >= 17
    assert parity["greedy_tokens_equal"]
    assert parity["encoder_max_abs_diff"] < 1e-4 and parity["decoder_logits_max_abs_diff"] < 1e-4
    assert not model.training  # the exporter put the model back as it was


def test_onnx_greedy_equals_torch_greedy_on_new_shapes(exported):
    model, out, _ = exported
    vocab, cfg = model.vocab_size, model.config
    ids, mask = padded_batch(vocab, [9, 2, 5, 7], cfg.pad_token_id, seed=5)
    eos = int(model.generate(ids, mask, max_new_tokens=5)[1, 3])  # a token the model does emit
    expected = model.generate(ids, mask, max_new_tokens=12, eos_token_id=eos)[:, 1:]
    got = generate_onnx(out / "encoder.onnx", out / "decoder.onnx", ids.numpy(), mask.numpy(),
                        max_new_tokens=12, decoder_start_token_id=cfg.decoder_start_token_id,
                        eos_token_id=eos)
    assert got == strip_after_eos(expected.numpy(), eos)
    assert any(len(row) < 12 for row in got)  # some row stopped at the eos


def test_runtime_does_not_import_torch():
    import subprocess

    code = ("import sys, modkit.runtime.seq2seq; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unknown_provider_is_refused(exported):
    from modkit import UserError
    from modkit.runtime.seq2seq import generate_onnx

    _, out, _ = exported
    with pytest.raises(UserError, match="unknown provider 'tpu'"):
        generate_onnx(out / "encoder.onnx", out / "decoder.onnx", [[1, 2]], [[1, 1]], 2, 0, 1, provider="tpu")
