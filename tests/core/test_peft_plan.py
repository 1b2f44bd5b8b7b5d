"""One PEFT plan: the spec's (preflight, build, resume) and the manifest's (assemble_model)."""
from __future__ import annotations

from safetensors.torch import load_file

import modkit
from modkit.builder.assembly import assemble_model
from modkit.builder.peft_plan import PeftPlan
from modkit.spec import load_spec
from specs import tiny_gpt_parts, write_corpus


def three_stage_spec(folder, merge: bool):
    write_corpus(folder, 20_000)
    stage = 'data = "corpus.txt"\nsteps = 2\nbatch_size = 2\nseq_len = 16\nobjective = { use = "clm" }'
    spec = folder / "spec.toml"
    spec.write_text(f'''name = "plan"
{tiny_gpt_parts()}
[[stages]]
{stage}
peft = [{{ use = "lora", r = 2, targets = ["attn.q"] }}]
[[stages]]
{stage}
peft = [{{ use = "prefix", length = 2 }}, {{ use = "adapter", bottleneck = 4 }}]
[[stages]]
{stage}
peft = [{{ use = "lora", r = 2, targets = ["attn.v"] }}]
[export]
onnx = false
merge = {str(merge).lower()}
''')
    return spec


def described(plan: PeftPlan) -> list[list[tuple[str, str, bool]]]:
    return [[(m.component.name, m.key, m.merges) for m in stage] for stage in plan.stages]


def test_the_spec_plan_merges_at_every_boundary_and_the_last_stage_only_for_the_export(tmp_path):
    for merge in (True, False):
        plan = PeftPlan.from_spec(load_spec(three_stage_spec(tmp_path, merge)))
        assert described(plan) == [
            [("lora", "stages[0].peft[0]", True)],
            [("prefix", "stages[1].peft[0]", True), ("adapter", "stages[1].peft[1]", True)],
            [("lora", "stages[2].peft[0]", merge)]]


def test_the_manifest_plan_rebuilds_what_the_artifact_kept(tmp_path):
    out = tmp_path / "out"
    modkit.build(three_stage_spec(tmp_path, merge=False), out, progress=False, echo=lambda _: None)
    manifest = modkit.Manifest.read(out)  # as every reader of an artifact reads it
    plan = PeftPlan.from_manifest(manifest, modkit.get_registry())
    # the first LoRA folded away at its boundary; the prefix (frozen) and the adapter stayed;
    # the last LoRA is kept unmerged, as merge = false asks
    assert described(plan) == [
        [],
        [("prefix", "stages[1].peft[0]", True), ("adapter", "stages[1].peft[1]", True)],
        [("lora", "stages[2].peft[0]", False)]]
    model = assemble_model(manifest, modkit.load_tokenizer(out), modkit.get_registry())
    weights = load_file(str(out / "model.safetensors"))
    assert set(model.state_dict()) == set(weights)
    layer = "backbone.blocks.0."
    assert {layer + "attn.v.update.A", layer + "attn.o.adapter.up.weight", layer + "attn.prefix.key"} <= set(weights)
    assert layer + "attn.q.weight" in weights and not any(k.startswith(layer + "attn.q.update") for k in weights)
    model.load_state_dict(weights)  # strict
