"""Mixture-of-experts variants (loramoe, goat, moslora): routing, balance loss, the batched
expert computation against a per-expert loop, GOAT's SVD seeding and start, MoSLoRA's update."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import lorasweep
from lorasweep.variants.loramoe import load_balancing_loss

IN, OUT = 16, 24
ROUTED = ["loramoe", "goat"]


def _close(actual, expected, atol=1e-5, msg=None):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0, msg=msg)


def _adapt(key: str, rank: int = 8, alpha: float = 16.0, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN, OUT), nn.ReLU(), nn.Linear(OUT, OUT))
    base = nn.Sequential(nn.Linear(IN, OUT), nn.ReLU(), nn.Linear(OUT, OUT))
    base.load_state_dict(model.state_dict())
    lorasweep.apply_variant(model, key, rank=rank, alpha=alpha, target_modules=["0", "2"],
                            **options)
    return model, lorasweep.get_variant(model), base


def _inputs(n: int = 2, t: int = 7, seed: int = 1, width: int = IN) -> torch.Tensor:
    return torch.randn(n, t, width, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _perturb(variant, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in variant.adapter_parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=g))


def _reference_routing(layer, x: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token expert weights of the top-k (``N × k``) and their indices, from the papers."""
    logits = x @ layer.lora_router.t()
    if key == "loramoe":  # top-k of the logits, softmax over the chosen
        top, idx = logits.topk(layer.top_k, dim=-1)
        return torch.softmax(top, dim=-1), idx
    probs = torch.softmax(logits, dim=-1)  # goat: softmax over all, top-k, renormalised
    top, idx = probs.topk(layer.top_k, dim=-1)
    return top / top.sum(-1, keepdim=True), idx


def _reference_loop(layer, x: torch.Tensor, key: str, exact_start: bool = False):
    """The adapter output computed one expert and one token at a time (the reference codes'
    formulation): ``s · Σ_{e ∈ topk} w_e B_e A_e x`` (GOAT exact_start: minus the frozen
    initial experts, routed, plus all of them)."""
    flat = x.reshape(-1, layer.in_features)
    weights, idx = _reference_routing(layer, flat, key)
    re = layer.expert_rank
    out = torch.zeros(flat.shape[0], layer.out_features)
    for e in range(layer.num_experts):
        rows = slice(e * re, (e + 1) * re)
        expert = layer.lora_B[:, rows] @ layer.lora_A[rows]
        initial = layer.lora_B0[:, rows] @ layer.lora_A0[rows] if exact_start else None
        for token in range(flat.shape[0]):
            chosen = (idx[token] == e).nonzero()
            if len(chosen):
                out[token] += weights[token, chosen[0, 0]] * (expert @ flat[token])
                if exact_start:
                    out[token] -= weights[token, chosen[0, 0]] * (initial @ flat[token])
            if exact_start:
                out[token] += initial @ flat[token]
    return layer.scaling * out.reshape(*x.shape[:-1], layer.out_features)


# ------------------------------------------------------------------------------ routing
@torch.no_grad()
def test_exactly_top_k_experts_get_weight_per_token():
    for key in ROUTED:
        for top_k in (1, 2, 3):
            _, variant, _ = _adapt(key, top_k=top_k)
            layer = variant.layers["0"]
            x = _inputs()
            gates, probs, selected = layer.route(x)
            assert gates.shape == (*x.shape[:-1], 8) and selected.shape[-1] == top_k
            assert ((gates != 0).sum(-1) == top_k).all(), key
            _close(gates.sum(-1), torch.ones(x.shape[:-1]))
            # the non-zero gates sit exactly on the selected experts, with the papers' weights
            assert torch.equal(gates.gather(-1, selected) > 0, torch.ones_like(selected, dtype=bool))
            weights, idx = _reference_routing(layer, x, key)
            assert torch.equal(selected, idx)
            _close(gates.gather(-1, selected), weights, atol=1e-6)
            _close(probs.sum(-1), torch.ones(x.shape[:-1]))


@torch.no_grad()
def test_unselected_experts_do_not_change_the_output():
    for key in ROUTED:
        model, variant, _ = _adapt(key)
        _perturb(variant)
        layer = variant.layers["0"]
        x = _inputs(1, 1)
        gates, _, _ = layer.route(x)
        before = layer(x)
        idle = (gates.reshape(-1) == 0).nonzero().flatten()
        for e in idle.tolist():  # scramble every expert this token did not choose
            rows = slice(e * layer.expert_rank, (e + 1) * layer.expert_rank)
            layer.lora_A[rows] += 1.0
            layer.lora_B[:, rows] -= 1.0
        _close(layer(x), before, atol=1e-6, msg=key)


# --------------------------------------------------------------------------- balance loss
def test_balance_loss_is_lower_for_balanced_routing():
    for key in ROUTED:
        _, variant, _ = _adapt(key, aux_loss_weight=0.5)
        layer = variant.layers["0"]
        tokens = 5.0 * torch.eye(IN)[torch.arange(64) % 8]  # token t says "expert t mod 8"
        with torch.no_grad():
            layer.lora_router.copy_(4.0 * torch.eye(8, IN))  # balanced: t -> expert t mod 8
        layer(tokens)
        balanced = layer.take_aux_loss()
        with torch.no_grad():  # imbalanced: every token -> expert 0 (and the same runner-up)
            layer.lora_router.zero_()
            layer.lora_router[0] = 4.0
            layer.lora_router[1] = 2.0
        layer(tokens)
        imbalanced = layer.take_aux_loss()
        assert abs(balanced - 2.0) < 0.01, f"{key}: evenly spread top-1 gives k = 2"
        assert imbalanced > 7.0, f"{key}: all tokens on the same experts gives about E = 8"
        assert imbalanced > balanced


def test_balance_loss_formula():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1]])
    selected = torch.tensor([[0, 1], [1, 2]])
    f = torch.tensor([1, 2, 1, 0]) / 2  # fraction of tokens per expert (a token counts k times)
    p = probs.mean(0)
    _close(load_balancing_loss(probs, selected), 4 * (f * p).sum(), atol=1e-7)


def test_extra_loss_is_the_weighted_mean_over_layers_and_reaches_the_router():
    for key in ROUTED:
        model, variant, _ = _adapt(key, aux_loss_weight=0.25)
        assert variant.extra_loss() is None  # nothing recorded before a forward
        model(_inputs())
        per_layer = [layer.aux_loss.detach() for layer in variant.layers.values()]
        loss = variant.extra_loss()
        _close(loss, 0.25 * torch.stack(per_layer).mean(), atol=1e-7)
        assert variant.extra_loss() is None, "the loss of a forward is handed over once"
        loss.backward()
        for name, layer in variant.layers.items():
            assert layer.lora_router.grad.abs().sum() > 0, f"{key} {name}: no balance gradient"
    _, variant, _ = _adapt("loramoe", aux_loss_weight=0.0)
    assert variant.extra_loss() is None


# ------------------------------------------------------------------- batched == the loop
def test_batched_experts_equal_a_per_expert_loop():
    cases = [("loramoe", {}), ("loramoe", {"top_k": 3}), ("goat", {}),
             ("goat", {"exact_start": True})]
    for key, options in cases:
        for rank in (8, 16):  # experts of rank 1 and 2
            model, variant, _ = _adapt(key, rank=rank, **options)
            _perturb(variant)
            for layer in variant.layers.values():
                x = _inputs(seed=rank, width=layer.in_features)
                with torch.no_grad():
                    got = layer.adapter_output(x)
                    want = _reference_loop(layer, x, key, options.get("exact_start", False))
                _close(got, want, atol=1e-5, msg=f"{key} {options} rank {rank}")


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def test_forward_cost_in_calls_does_not_grow_with_the_number_of_experts():
    """No Python loop over experts: 2 or 8 experts run the same torch calls."""
    for key in ROUTED:
        counts = []
        for experts in (2, 8):
            _, variant, _ = _adapt(key, rank=8, num_experts=experts)
            layer = variant.layers["0"]
            with _CountCalls() as counter:
                layer(_inputs())
            counts.append(counter.calls)
        assert counts[0] == counts[1], f"{key}: {counts}"


# ----------------------------------------------------------------------------------- GOAT
@torch.no_grad()
def test_goat_experts_are_svd_slices_and_the_unrouted_sum_is_subtracted():
    _, variant, base = _adapt("goat")
    for name, layer in variant.layers.items():
        weight = base.get_submodule(name).weight
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        segment = min(weight.shape) // 8
        assert layer.expert_rank == 1
        total = torch.zeros_like(weight)
        for e in range(8):
            i = e * segment  # expert e: the first re components of segment e
            expert = layer.scaling * layer.lora_B[:, e : e + 1] @ layer.lora_A[e : e + 1]
            _close(expert, s[i] * torch.outer(u[:, i], vh[i]) / 10.0, atol=1e-6, msg=f"{e}")
            total += expert
        _close(layer.base.weight, weight - total, atol=1e-6, msg=name)
        assert layer.scaling == (3 * layer.in_features / 1) ** 0.5


@torch.no_grad()
def test_goat_start_deviates_from_the_base_exactly_by_the_unrouted_experts():
    model, variant, base = _adapt("goat")
    layer = variant.layers["0"]
    x = _inputs()
    gates, _, _ = layer.route(x)
    missing = torch.zeros(*x.shape[:-1], OUT)
    for e in range(8):
        expert = layer.scaling * layer.lora_B[:, e : e + 1] @ layer.lora_A[e : e + 1]
        missing += (1 - gates[..., e : e + 1]) * (x @ expert.t())
    got = layer(x)
    want = base[0](x) - missing
    _close(got, want, atol=1e-5)
    assert (got - base[0](x)).abs().max() > 1e-3, "GOAT's start differs from the base model"


@torch.no_grad()
def test_goat_exact_start_starts_as_the_base_model():
    model, variant, base = _adapt("goat", exact_start=True)
    x = _inputs()
    _close(model(x), base(x), atol=1e-5)
    _perturb(variant)
    assert (model(x) - base(x)).abs().max() > 1e-2


def test_goat_refuses_more_expert_components_than_the_layer_has():
    with pytest.raises(lorasweep.variants.VariantError, match="min"):
        _adapt("goat", rank=32)  # 8 experts x rank 4 > min(16, 24)


# -------------------------------------------------------------------------------- MoSLoRA
@torch.no_grad()
def test_moslora_update_is_s_b_m_a():
    model, variant, base = _adapt("moslora", rank=4, alpha=8.0)
    x = _inputs()
    _close(model(x), base(x))  # B = 0: starts as the base model
    _perturb(variant)
    for name, layer in variant.layers.items():
        b, m, a = layer.lora_B, layer.lora_mixer, layer.lora_A
        assert m.shape == (4, 4)
        _close(layer.delta_weight(), 2.0 * b @ m @ a, atol=1e-6, msg=name)
        h = torch.randn(3, layer.in_features)
        _close(layer(h), layer.base(h) + h @ (2.0 * b @ m @ a).t(), msg=name)
    unmerged = model(x)
    variant.merge()
    _close(model(x), unmerged)
    variant.unmerge()
