"""The cached decoders' IO-binding path (the caches left where the graph wrote them between
steps), run here with the host as the device: the path `--provider cuda` takes, less the GPU.
It must give the tokens of the plain numpy path, greedy and beam, with rows leaving the batch."""
from __future__ import annotations

import numpy as np
import pytest
from onnxruntime import OrtValue

from modkit.runtime import make_session
from modkit.runtime.decoders import CachedLM, CachedSeq2Seq, binding_device
from modkit.runtime.generation import beam_search, generate
from modkit.runtime.sessions import pad_ids


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_cached_lm_bound_on_the_host_gives_the_numpy_path_s_tokens(gpt_artifact, search):
    session = make_session(gpt_artifact / "model_with_past.onnx", "cpu")
    assert binding_device(session) is None  # a CPU session keeps numpy caches by default
    rng = np.random.default_rng(3)
    prompts = [rng.integers(5, 250, n).tolist() for n in (3, 9, 5, 1)]
    eos = int(rng.integers(5, 250))  # some rows end early: the batch shrinks on the device too
    tokens, decoders = [], []
    for device in (None, "cpu"):
        decoder = CachedLM(session, prompts, device=device)
        if search == "greedy":
            tokens.append(generate(decoder, len(prompts), max_new_tokens=12, eos_token_id=eos))
        else:
            tokens.append(beam_search(decoder, len(prompts), num_beams=3, max_new_tokens=8, eos_token_id=eos))
        decoders.append(decoder)
    assert tokens[0] == tokens[1] and any(tokens[0])
    assert all(isinstance(v, np.ndarray) for v in decoders[0].past.values())
    assert all(isinstance(v, OrtValue) for v in decoders[1].past.values())  # the cache stayed bound


def test_cached_seq2seq_bound_on_the_host_gives_the_numpy_path_s_tokens(seq2seq_artifact):
    encoder = make_session(seq2seq_artifact / "encoder.onnx", "cpu")
    decoder = make_session(seq2seq_artifact / "decoder.onnx", "cpu")
    ids, mask = pad_ids([[5, 40, 41, 42, 2], [5, 60, 2], [5, 70, 71, 2]], 1)
    tokens = [generate(CachedSeq2Seq(encoder, decoder, ids, mask, 2, device=device), 3, max_new_tokens=10,
                       eos_token_id=2) for device in (None, "cpu")]
    assert tokens[0] == tokens[1] and any(tokens[0])


@pytest.mark.machine_dependent
def test_on_a_gpu_the_cache_stays_on_the_device_and_the_tokens_are_the_cpu_s(gpt_artifact, seq2seq_artifact):
    """Runs only where onnxruntime has CUDA (skipped on the CPU machines this was written on)."""
    import onnxruntime as ort

    from modkit.runtime import Runtime

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA in this onnxruntime")
    session = make_session(gpt_artifact / "model_with_past.onnx", "cuda")
    decoder = CachedLM(session, [[5, 6, 7], [8]])
    assert decoder.device == "cuda"
    generate(decoder, 2, max_new_tokens=4)
    assert all(v.device_name().lower() == "cuda" for v in decoder.past.values())
    texts = ["import the", "def main", "x"]
    for artifact in (gpt_artifact, seq2seq_artifact):
        cpu = Runtime(artifact).run(texts, max_new_tokens=8)
        assert Runtime(artifact, provider="cuda").run(texts, max_new_tokens=8) == cpu
        assert len(Runtime(artifact, provider="cuda", precision="fp16").run(texts, max_new_tokens=8)) == 3
