"""modkit's training step vs transformers + AdamW on the same weights; MFU in the same run.

    python benchmarks/bench_train.py [--threads 1] [--repeats 3] [--no-compile]

GPT-2 small (causal LM loss) and bert-base (masked-LM head, loss over every position) at
4x128: forward, loss, backward, gradient clipping and an AdamW step. modkit's side is what
``modkit build`` runs (its optimizer groups, its loss, eager or through torch.compile);
the reference is transformers' *LMHeadModel / *ForMaskedLM with ``labels`` and
torch.optim.AdamW. MFU = 6·N·tokens/s over the best ``torch.mm`` FLOP/s measured at the
start of the same run with the same thread count. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

import modkit
from modkit.builder.training.optim import stage_optimizer
from modkit.builder.telemetry.peak import matmul_peak

from bench_backbones import median_seconds  # alternating runs, median

BATCH, SEQ = 4, 128


class _Stage:  # the stage keys stage_optimizer reads
    lr, weight_decay, warmup_steps, steps = 1e-4, 0.01, 0, 1


def reference_step(model, ids):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def run():
        model.train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


class _Loss(torch.nn.Module):
    """modkit's loss as the build computes it: causal (shifted) for GPT, every position for BERT's MLM head."""

    def __init__(self, backbone, causal: bool):
        super().__init__()
        self.backbone, self.causal = backbone, causal

    def forward(self, ids):
        hidden = self.backbone(ids).last_hidden_state
        if self.causal:
            hidden, targets = hidden[:, :-1], ids[:, 1:]
        else:
            targets = ids
        logits = self.backbone.lm_logits(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def modkit_step(backbone, ids, causal: bool, compile_: bool):
    params = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = stage_optimizer(backbone, _Stage).optimizer  # the default: AdamW
    loss_fn = _Loss(backbone, causal)
    loss_fn = torch.compile(loss_fn) if compile_ else loss_fn

    def run():
        backbone.train()
        loss = loss_fn(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak(torch.device("cpu"), "fp32")
    print(f"torch.mm peak: {peak / 1e9:.1f} GFLOP/s ({args.threads} thread(s))", flush=True)
    families = {
        "gpt2-small": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_pdrop=0, resid_pdrop=0,
                                                                                     embd_pdrop=0)), True),
        "bert-base": (lambda: transformers.BertForMaskedLM(transformers.BertConfig(hidden_dropout_prob=0,
                                                                                   attention_probs_dropout_prob=0)),
                      False),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, causal) in families.items():
            reference = make()
            reference.save_pretrained(Path(tmp) / name, safe_serialization=True)
            ours = modkit.load_model(Path(tmp) / name)
            backbone = getattr(ours, "backbone", ours)
            n = sum(p.numel() for p in reference.parameters())
            ids = torch.randint(0, reference.config.vocab_size, (BATCH, SEQ))
            fns = [reference_step(reference, ids), modkit_step(backbone, ids, causal, False)]
            labels = ["transformers", "modkit eager"]
            if causal and not args.no_compile:
                compiled = modkit.load_model(Path(tmp) / name)
                fns.append(modkit_step(getattr(compiled, "backbone", compiled), ids, causal, True))
                labels.append("modkit compiled")
            fns[-1]()  # compile (or warm) before the timed alternation
            times = median_seconds(*fns, repeats=args.repeats)
            for label, t in zip(labels, times):
                tps = BATCH * SEQ / t
                rows.append((name, label, t, t / times[0], 6 * n * tps / peak, n))
                print(f"{name} {label}: {t * 1e3:.0f} ms/step, MFU {6 * n * tps / peak:.1%}", flush=True)
    print(f"\nthreads: {args.threads}, {BATCH}x{SEQ}, repeats: {args.repeats} (median), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, torch.mm peak {peak / 1e9:.1f} GFLOP/s\n")
    print("| model | implementation | ms / step | ratio to transformers | MFU |\n|---|---|---:|---:|---:|")
    for name, label, t, ratio, mfu, _ in rows:
        print(f"| {name} | {label} | {t * 1e3:.0f} | {ratio:.2f} | {mfu:.1%} |")


if __name__ == "__main__":
    main()
