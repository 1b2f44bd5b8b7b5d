"""`modkit cost`: training FLOPs of a spec, artifact or preset, and the hours, energy, CO2e
and cloud price on a hardware profile (Strubell et al. 2019's accounting)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from modkit.errors import UserError
from modkit_plugins.analysis.cost_model import LB_PER_KG, Footprint, hours_for, stage_flops
from modkit_plugins.analysis.profiles import load_profiles, parse_hardware


def _plan(target: str | None, ctx: click.Context, tokens: float | None, seq_len: int, target_len: int | None):
    if target is None:
        return None
    import modkit
    from modkit_plugins.analysis import cost_plan

    registry = modkit.get_registry((ctx.find_root().obj or {}).get("registry_path"))
    path = Path(target)
    if path.is_dir():
        return cost_plan.plan_from_artifact(path, registry)
    if path.is_file():
        return cost_plan.plan_from_spec(path, registry)
    if tokens is None:
        raise UserError(f"{target!r} is neither a spec file nor an artifact folder; for a backbone preset "
                        "give the training tokens with --tokens")
    return cost_plan.plan_from_preset(target, registry, tokens, seq_len, target_len)


@click.command("cost")
@click.argument("target", required=False, metavar="[SPEC_OR_ARTIFACT]")
@click.option("--hardware", default=None, metavar="NAME[xN]",
              help="A hardware profile and device count, e.g. V100x64, TPUv3x32, cpu (default: cpu).")
@click.option("--hours", type=click.FloatRange(min=0), default=None,
              help="Training hours (default: measured for an artifact, else FLOPs at --mfu of peak).")
@click.option("--power", type=click.FloatRange(min=0), default=None,
              help="Total power draw of all devices in watts (default: the profile's per device x N).")
@click.option("--pue", type=click.FloatRange(min=1), default=1.58, show_default=True,
              help="Data-centre power usage effectiveness.")
@click.option("--co2-per-kwh", type=click.FloatRange(min=0), default=0.954, show_default=True,
              help="Pounds of CO2e per kWh (0.954: US average, EPA 2018, as in Strubell et al. 2019).")
@click.option("--mfu", type=click.FloatRange(min=0, min_open=True, max=1), default=0.4, show_default=True,
              help="Fraction of peak FLOPs reached, to turn FLOPs into hours.")
@click.option("--tokens", type=click.FloatRange(min=1), default=None,
              help="For a backbone preset: training tokens (source tokens for encoder-decoders).")
@click.option("--seq-len", type=click.IntRange(min=1), default=512, show_default=True,
              help="For a backbone preset: sequence length.")
@click.option("--target-len", type=click.IntRange(min=1), default=None,
              help="For an encoder-decoder preset: decoder tokens per sequence (default --seq-len).")
@click.option("--profiles", "profile_files", multiple=True, type=click.Path(dir_okay=False),
              help="A TOML file of extra hardware profiles (repeatable).")
@click.option("--memory", is_flag=True,
              help="For a spec: bytes per device of weights, gradients, optimizer state and activations under "
                   "DDP and FSDP at --hardware's device count.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def cost(ctx, target, hardware, hours, power, pue, co2_per_kwh, mfu, tokens, seq_len, target_len,
         profile_files, memory, as_json):
    """What training cost: FLOPs, hours, energy (kWh x PUE), CO2e and cloud price."""
    profiles = load_profiles(list(profile_files))
    plan = _plan(target, ctx, tokens, seq_len, target_len)
    profile, devices = parse_hardware(hardware or "cpu", profiles)
    stages = [(label, stage_flops(plan.shape, s)) for label, s in plan.stages] if plan else []
    flops = sum(f["total"] for _, f in stages) if plan else None
    measured = plan.measured if plan else {}
    if hours is not None:
        hours_source = "given"
    elif measured.get("wall_seconds") is not None and hardware is None:
        hours, hours_source = measured["wall_seconds"] / 3600, "measured"
    elif flops is not None:
        hours, hours_source = hours_for(flops, profile, devices, mfu), f"FLOPs at {mfu:.0%} of peak"
    else:
        raise UserError("give --hours, or a spec, artifact or preset to estimate them from")
    fp = Footprint(profile, devices, hours, power if power is not None else profile.power_w * devices,
                   pue, co2_per_kwh)
    result = {"flops": flops, **fp.as_dict(), "hours_source": hours_source,
              "power_source": "given" if power is not None else "profile"}
    if measured.get("energy_kwh") is not None and hardware is None and power is None:
        # a meter (RAPL/NVML) measured the build: use it instead of the profile's power
        kwh_pue = measured["energy_kwh"] * pue
        result.update(kwh_pue=kwh_pue, co2e_lb=kwh_pue * co2_per_kwh, co2e_kg=kwh_pue * co2_per_kwh / LB_PER_KG,
                      power_w=None, power_source=f"measured ({measured['energy_source']})")
    if plan:
        result["model"] = plan.name
        result["stages"] = [{"stage": label, **f} for label, f in stages]
        result["weights"] = plan.shape.weights
        if measured:
            result["measured"] = measured
    if memory:
        if not plan or plan.backbone is None:
            raise UserError("--memory plans a spec: give a spec file")
        from modkit_plugins.analysis.cost_memory import memory_plan

        result["memory"] = memory_plan(plan.backbone, plan.memory, devices)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print(result, profile)


def _print(r: dict, profile) -> None:
    if r.get("stages"):
        sides = r["weights"]  # one stack ("encoder" in the FLOP model) unless an encoder-decoder
        weights = (", ".join(f"{k} {v / 1e6:.3g} M" for k, v in sides.items()) if len(sides) > 1
                   else f"{sum(sides.values()) / 1e6:.3g} M")
        click.echo(f"model     {r['model']}: matmul weights {weights}")
        for s in r["stages"]:
            click.echo(f"stage     {s['stage']}: {s['total']:.3g} FLOPs (forward {s['forward']:.3g}, "
                       f"activation grads {s['activation_grad']:.3g}, weight grads {s['weight_grad']:.3g})")
        click.echo(f"total     {r['flops']:.3g} FLOPs")
    click.echo(f"hardware  {r['hardware']} ({profile.description})")
    click.echo(f"hours     {r['hours']:.4g} ({r['hours_source']})")
    if r["power_w"] is not None:
        click.echo(f"power     {r['power_w']:.6g} W ({r['power_source']})")
    click.echo(f"energy    {r['kwh_pue']:.4g} kWh x PUE {r['pue']}"
               + (f" ({r['power_source']})" if r["power_w"] is None else ""))
    click.echo(f"CO2e      {r['co2e_lb']:.4g} lb = {r['co2e_kg']:.4g} kg (at {r['co2_lb_per_kwh']} lb/kWh)")
    for m in r.get("memory", []):
        click.echo(f"memory    {m['stage']}: per device at {m['devices']} device(s), "
                   f"{m['sequences_per_device']} sequence(s) per micro-batch")
        for strategy in ("ddp", "fsdp"):
            f = m[strategy]
            acts = f"{f['activations'] / 2**20:,.1f}" if f["activations"] is not None else "not estimated"
            click.echo(f"          {strategy:4}  weights {f['weights'] / 2**20:,.1f} MiB, gradients "
                       f"{f['gradients'] / 2**20:,.1f}, optimizer state {f['optimizer_state'] / 2**20:,.1f}, "
                       f"activations {acts}: {f['total'] / 2**20:,.1f} MiB")
    dollars = lambda x: f"${x:,.0f}" if x >= 100 else f"${x:,.4g}"
    click.echo(f"price     {dollars(r['price_usd_low'])} - {dollars(r['price_usd_high'])}")
