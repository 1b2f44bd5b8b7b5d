"""Prompt tuning through `modkit build` on every family: the virtual tokens baked into the
ONNX graphs, served torch-free by `modkit run` with torch's outputs, and the position budget
checked before any training."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import modkit
from modkit.errors import SpecError
from modkit.nn.prompt import prompt_of
from modkit.runtime.artifact import read_manifest

from specs import killed_after_step
from test_build_peft import check_onnx_batches, check_served, quiet_build, write_spec

PROMPT = '[{ use = "prompt", num_virtual_tokens = 5, init = "text", init_text = "the module" }]'


def torch_greedy(out, text: str, n: int) -> list[int]:
    """The rebuilt torch model's greedy continuation of ``text``."""
    model, tok = modkit.load_model(out), modkit.load_tokenizer(out)
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        return model.backbone.generate(ids, torch.ones_like(ids), max_new_tokens=n)[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family", ["gpt", "bert", "bart", "t5"])
def test_a_prompt_builds_exports_and_serves_without_torch(tmp_path, family):
    out = tmp_path / "out"
    quiet_build(write_spec(tmp_path, family, PROMPT, merge=True), out)
    m = read_manifest(out)
    assert m["parity"]["max_abs_diff"] < 1e-4
    (record,) = m["components"]["stages"][0]["peft"]
    assert record["kept"] and record["merged"]  # frozen virtual tokens stay in the model
    (figures,) = m["stages"][0]["peft_parameters"]
    assert figures["trainable_parameters"] == 5 * 32
    limit = {"gpt": 64, "bert": 64, "bart": 64, "t5": None}[family]
    assert m["components"]["backbone"]["max_positions"] == (limit and limit - 5)  # the runtime truncates to it
    model = modkit.load_model(out)
    assert prompt_of(model.backbone) is not None and prompt_of(model.backbone).length == 5
    if family == "gpt":
        assert m["parity"]["with_past_greedy_tokens_equal"]
        check_onnx_batches(out)
        # served by onnxruntime in a process without torch: the cached graph carries the prompt
        code = ("import sys, json; from modkit.runtime import Runtime; "
                "r = Runtime(sys.argv[1]).run(['The socket module'], max_new_tokens=6)[0]; "
                "assert 'torch' not in sys.modules; print(json.dumps(r))")
        served = json.loads(subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True,
                                           text=True).stdout)
        assert served["ids"] == torch_greedy(out, "The socket module", 6)[:len(served["ids"])]
    elif family in ("bart", "t5"):
        assert m["parity"]["greedy_tokens_equal"]
    else:
        check_onnx_batches(out)
    check_served(out, family)
    if limit:  # a long input is cut to the positions the virtual tokens leave, not run past the table
        from modkit.runtime import Runtime

        long_text = " ".join(["socket module returns a date"] * 40)
        (result,) = Runtime(out).run([long_text], **({"max_new_tokens": 3} if family in ("gpt", "bart") else {}))
        assert result


def test_a_prompt_over_the_position_budget_is_a_spec_error_before_training(tmp_path):
    spec = write_spec(tmp_path, "gpt", '[{ use = "prompt", num_virtual_tokens = 50 }]')
    spec.write_text(spec.read_text().replace("steps = 3", "steps = 999999"))
    with pytest.raises(SpecError, match=r"stages\[0\]\.seq_len: 24 tokens \+ 50 positions .* > the backbone's 64 "
                                        r"positions; set seq_len <= 14"):
        quiet_build(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_second_prompt_in_a_later_stage_is_a_spec_error(tmp_path):
    spec = write_spec(tmp_path, "bert", '[{ use = "prompt", num_virtual_tokens = 2 }]', stages=2)
    with pytest.raises(SpecError, match=r"stages\[1\]\.peft\[0\]: .*already has an input prompt"):
        quiet_build(spec, tmp_path / "out")



def test_a_prompt_build_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    from modkit.fileio import sha256_file

    spec = write_spec(tmp_path, "bert", PROMPT)
    spec.write_text(spec.read_text().replace("steps = 3", "steps = 5\ncheckpoint_every = 2"))
    quiet_build(spec, tmp_path / "whole")
    killed_after_step(3, monkeypatch, lambda: quiet_build(spec, tmp_path / "out"))
    modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None, resume=True)
    assert sha256_file(tmp_path / "out" / "model.safetensors") == sha256_file(tmp_path / "whole" / "model.safetensors")
