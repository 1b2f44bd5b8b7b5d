"""Training compute of a transformer, counted from the model itself (torch-free arithmetic).

Forward FLOPs per token are 2 per weight of every matrix multiply, plus attention:
``Q·Kᵀ`` and ``A·V`` cost 2·T·d_attn each per token and layer at context T (cross-attention:
T = the source length). Training adds the backward pass, which has two halves:

- activation gradients (dX = dY·Wᵀ): 2 per weight of every layer the gradient crosses, and
  twice the attention forward (both operands of each product);
- weight gradients (dW = Xᵀ·dY): 2 per *trainable* weight only.

So full training is the familiar 6·N·D (+ 3× attention), while a PEFT stage with frozen
base weights pays about 4·N·D plus 2 per trainable weight. Encoder and decoder are counted
on their own token streams (source and target).
"""
from __future__ import annotations

from dataclasses import dataclass, field

ENCODER, DECODER = "encoder", "decoder"


@dataclass
class Shape:
    """What the FLOP count needs of a model; decoder-only and encoder-only models use only
    the encoder side (one stack over the input tokens)."""

    d_model: int
    vocab_size: int
    encoder_decoder: bool
    weights: dict[str, int]  # side -> weights of matrix multiplies (embeddings excluded)
    self_attention: dict[str, list[int]]  # side -> d_attn of each self-attention layer
    cross_attention: list[int] = field(default_factory=list)  # d_attn of each cross-attention


@dataclass
class StageTokens:
    """One training stage: how many sequences of which lengths, and what is trained."""

    sequences: float  # steps * batch size
    source_len: int  # tokens per sequence (the encoder's, for encoder-decoders)
    target_len: int = 0  # decoder tokens per sequence (encoder-decoders only)
    lm_head: bool = True  # whether the objective predicts tokens (a vocabulary-sized output)
    peft_weights: dict[str, int] | None = None  # side -> weights added by PEFT; None = full training


def _sides(shape: Shape) -> list[str]:
    return [ENCODER, DECODER] if shape.encoder_decoder else [ENCODER]


def stage_flops(shape: Shape, stage: StageTokens) -> dict[str, float]:
    """Forward, activation-gradient and weight-gradient FLOPs of a stage, and their total."""
    tokens = {ENCODER: stage.sequences * stage.source_len, DECODER: stage.sequences * stage.target_len}
    context = {ENCODER: stage.source_len, DECODER: stage.target_len}
    out_side = DECODER if shape.encoder_decoder else ENCODER
    full = stage.peft_weights is None
    forward = act_grad = weight_grad = 0.0
    for side in _sides(shape):
        extra = 0 if full else stage.peft_weights.get(side, 0)
        weights = shape.weights.get(side, 0) + extra
        attn = sum(4 * context[side] * d for d in shape.self_attention.get(side, []))
        if side == DECODER:
            attn += sum(4 * stage.source_len * d for d in shape.cross_attention)
        head = shape.d_model * shape.vocab_size if (stage.lm_head and side == out_side) else 0
        n = tokens[side]
        forward += n * (2 * (weights + head) + attn)
        act_grad += n * (2 * (weights + head) + 2 * attn)
        weight_grad += n * 2 * ((weights + head) if full else extra)
    return {"forward": forward, "activation_grad": act_grad, "weight_grad": weight_grad,
            "total": forward + act_grad + weight_grad}


@dataclass
class Profile:
    name: str
    description: str
    power_w: float
    peak_tflops: float
    price_usd_hour: tuple[float, float]
    tdp_w: float | None = None


LB_PER_KG = 2.20462262


@dataclass
class Footprint:
    """Energy, emissions and price of ``hours`` on ``devices`` of ``profile``.

    ``power_w`` is the draw of all devices together (Strubell et al.'s "Power" column);
    energy is power x hours x PUE, CO2e is energy x ``co2_lb_per_kwh``.
    """

    profile: Profile
    devices: int
    hours: float
    power_w: float
    pue: float = 1.58
    co2_lb_per_kwh: float = 0.954

    @property
    def kwh_pue(self) -> float:
        return self.power_w * self.hours * self.pue / 1000

    @property
    def co2e_lb(self) -> float:
        return self.kwh_pue * self.co2_lb_per_kwh

    @property
    def co2e_kg(self) -> float:
        return self.co2e_lb / LB_PER_KG

    @property
    def price_usd(self) -> tuple[float, float]:
        low, high = self.profile.price_usd_hour
        return low * self.devices * self.hours, high * self.devices * self.hours

    def as_dict(self) -> dict:
        low, high = self.price_usd
        return {"hardware": f"{self.profile.name}x{self.devices}", "devices": self.devices,
                "hours": self.hours, "power_w": self.power_w, "pue": self.pue,
                "kwh_pue": self.kwh_pue, "co2_lb_per_kwh": self.co2_lb_per_kwh,
                "co2e_lb": self.co2e_lb, "co2e_kg": self.co2e_kg,
                "price_usd_low": low, "price_usd_high": high}


def hours_for(flops: float, profile: Profile, devices: int, mfu: float) -> float:
    """Wall-clock hours at a model-FLOPs utilisation ``mfu`` of the devices' peak."""
    return flops / (devices * profile.peak_tflops * 1e12 * mfu) / 3600
