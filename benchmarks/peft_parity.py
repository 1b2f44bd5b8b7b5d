"""Parity of modkit's PEFT folders with Hugging Face PEFT and AdapterHub: the table in docs/peft.md.

    python benchmarks/peft_parity.py [--seeds 3]

For each family (GPT-2, BERT, BART, T5; random tiny configs, a new random base per seed) and
each method (LoRA with random non-zero B, prefix tuning, prompt tuning):
  read:  a folder peft's `get_peft_model(...).save_pretrained` writes, applied by
         `modkit.load_model(base, peft=[folder])`, against `PeftModel.from_pretrained` on the base;
  write: a modkit model with the method, written by `export-hf` + `export-peft`, loaded by
         `PeftModel.from_pretrained`, against modkit's own outputs.
Outputs compared: GPT-2 logits and BERT's last hidden state at the real positions of a
right-padded batch of 3 (PeftModel's prompt-tuned outputs without their virtual positions),
BART's and T5's decoder logits. AdapterHub: the committed fixture of
tests/fixtures/adapterhub (made by its make_fixture.py). Prints a Markdown table: the largest
abs difference over the seeds, and the largest abs output beside it for scale.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import peft
import torch
import transformers
from safetensors.torch import load_file

import modkit
from modkit.builder.hf.convert import hf_model, save_hf
from modkit.builder.hf.peft_folders import export_peft
from modkit_plugins.peft.lora import LoRAOptions
from modkit_plugins.peft.lora_impl import LoRA, LoRALinear
from modkit_plugins.peft.prefix import PrefixOptions
from modkit_plugins.peft.prefix_impl import PrefixTuning
from modkit_plugins.peft.prompt import PromptOptions
from modkit_plugins.peft.prompt_impl import PromptTuning

VOCAB = 61
VIRTUAL = 3  # prefix and prompt length
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "adapterhub"

FAMILIES = {  # name -> (transformers class, config, PEFT task type for prefixes)
    "GPT-2": (transformers.GPT2LMHeadModel, lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0),
        "CAUSAL_LM"),
    "BERT": (transformers.BertModel, lambda: transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32), "FEATURE_EXTRACTION"),
    "BART": (transformers.BartForConditionalGeneration, lambda: transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32),
        "SEQ_2_SEQ_LM"),
    "T5": (transformers.T5ForConditionalGeneration, lambda: transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4),
        "SEQ_2_SEQ_LM"),
}
PEFT_LORA_TARGETS = {"GPT-2": ["c_attn", "c_proj"], "BERT": ["query", "value", "output.dense"],
                     "BART": ["q_proj", "v_proj", "fc1"], "T5": ["q", "v", "wo"]}
MODKIT_LORA_TARGETS = {"GPT-2": ["attn.q", "attn.v", "ffn.down"], "BERT": ["attn.*"],
                       "BART": ["attn.q", "cross.v", "ffn.up"], "T5": ["attn.q", "attn.v"]}


def new_hf(family: str, seed: int):
    torch.manual_seed(seed)
    cls, config, _ = FAMILIES[family]
    return cls(config()).eval()


def outputs(model, family: str, hf: bool, virtual: int = 0) -> torch.Tensor:
    """``virtual``: the virtual positions PeftModel's outputs start with (prompt tuning)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    kwargs = {"decoder_input_ids": torch.randint(3, VOCAB, (3, 5), generator=g)} if family in ("BART", "T5") else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **kwargs) if hf else model(ids, mask, **kwargs)
    if family in ("BART", "T5"):
        return out.logits
    values = out.last_hidden_state if family == "BERT" else out.logits
    return values[:, virtual:][mask.bool()]


def read(tmp: Path, family: str, method: str, seed: int) -> tuple[float, float]:
    base = new_hf(family, seed)
    base.save_pretrained(tmp / "base", safe_serialization=True)
    if method == "lora":
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=PEFT_LORA_TARGETS[family], init_lora_weights=False)
    elif method == "prefix":
        config = peft.PrefixTuningConfig(task_type=FAMILIES[family][2], num_virtual_tokens=VIRTUAL,
                                         prefix_projection=True, encoder_hidden_size=16)
    else:
        config = peft.PromptTuningConfig(task_type=FAMILIES[family][2], num_virtual_tokens=VIRTUAL)
    peft.get_peft_model(new_hf(family, seed + 100), config).save_pretrained(tmp / "adapter")
    theirs = peft.PeftModel.from_pretrained(base, tmp / "adapter").eval()
    expected = outputs(theirs, family, hf=True, virtual=VIRTUAL if method == "prompt" else 0)
    got = outputs(modkit.load_model(tmp / "base", peft=[tmp / "adapter"]), family, hf=False)
    return float((got - expected).abs().max()), float(expected.abs().max())


def write(tmp: Path, family: str, method: str, seed: int) -> tuple[float, float]:
    new_hf(family, seed).save_pretrained(tmp / "base", safe_serialization=True)
    ours = modkit.load_model(tmp / "base")
    backbone = getattr(ours, "backbone", ours)
    torch.manual_seed(seed + 200)
    if method == "lora":
        LoRA(LoRAOptions(r=2, alpha=5, targets=MODKIT_LORA_TARGETS[family])).apply(backbone)
        with torch.no_grad():  # trained-like: B away from its zero start
            for m in backbone.modules():
                if isinstance(m, LoRALinear):
                    m.update.B.normal_(0.0, 0.2)
    elif method == "prefix":
        PrefixTuning(PrefixOptions(length=VIRTUAL, projection=8, positions="peft")).apply(backbone)
    else:
        PromptTuning(PromptOptions(num_virtual_tokens=VIRTUAL, init="vocab")).apply(backbone)
    save_hf(hf_model(ours), tmp / "back")
    (folder,) = export_peft(ours, tmp / "peft")
    hf = FAMILIES[family][0].from_pretrained(tmp / "back").eval()
    expected = outputs(peft.PeftModel.from_pretrained(hf, folder).eval(), family, hf=True,
                       virtual=VIRTUAL if method == "prompt" else 0)
    got = outputs(ours, family, hf=False)
    return float((got - expected).abs().max()), float(expected.abs().max())


def adapterhub() -> tuple[float, float]:
    io = load_file(str(FIXTURE / "io.safetensors"))
    model = modkit.load_model(FIXTURE / "base", peft=[FIXTURE / "houlsby"])
    real = io["attention_mask"].bool()
    with torch.no_grad():
        got = model(io["input_ids"], io["attention_mask"]).last_hidden_state[real]
    return float((got - io["expected"][real]).abs().max()), float(io["expected"][real].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}; "
          f"max over {args.seeds} seeds\n")
    print("| family | method | direction | max abs diff | max abs output |")
    print("|---|---|---|---:|---:|")
    for family in FAMILIES:
        for method in ("lora", "prefix", "prompt"):
            for direction, fn in (("PEFT folder -> modkit", read), ("modkit -> export-peft -> PeftModel", write)):
                diff = scale = 0.0
                for seed in range(args.seeds):
                    with tempfile.TemporaryDirectory() as tmp:
                        d, s = fn(Path(tmp), family, method, seed)
                    diff, scale = max(diff, d), max(scale, s)
                print(f"| {family} | {method} | {direction} | {diff:.1e} | {scale:.2f} |", flush=True)
    diff, scale = adapterhub()
    print(f"| BERT | Houlsby adapter (AdapterHub double_seq_bn) | AdapterHub folder -> modkit vs stored outputs "
          f"| {diff:.1e} | {scale:.2f} |")


if __name__ == "__main__":
    main()
