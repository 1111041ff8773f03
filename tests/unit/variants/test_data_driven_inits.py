"""The data-driven inits (lora-ga, lora-one, gora, eva) on a tiny BERT classifier built in code.

Each test adapts a fresh copy of one random BERT (hidden 32, 2 layers) and runs ``prepare`` on a
few random token batches with labels. Gradients are checked against plain autograd on another
fresh copy, the inits against the methods' formulas, and lora-ga / eva against peft as an oracle.
"""

from __future__ import annotations

import gc
import json
import math

import pytest
import torch
from helpers import require, tiny_bert
from torch import nn

import lorasweep
from lorasweep.config import TrainConfig, TrialSpec, VariantSpec
from lorasweep.variants import VariantError
from lorasweep.variants._gradients import estimate_gradients
from lorasweep.variants.eva import IncrementalPCA

KEYS = ["lora-ga", "lora-one", "gora", "eva"]
GRADIENT_KEYS = ["lora-ga", "lora-one", "gora"]
RANK, ALPHA = 4, 8.0


def _bert() -> nn.Module:
    return tiny_bert(initializer_range=0.2).eval()


def _batches(n: int = 3, size: int = 4, length: int = 12, seed: int = 1, labels: bool = True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 100, (size, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, length - 4 :] = 0
        mask[2, length - 7 :] = 0
        ids[mask == 0] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
        if labels:
            batch["labels"] = torch.randint(0, 2, (size,), generator=g)
        out.append(batch)
    return out


def _adapt(key: str, targets="all-linear", rank: int = RANK, alpha: float = ALPHA, **options):
    model = _bert()
    lorasweep.apply_variant(model, key, rank=rank, alpha=alpha, target_modules=targets, **options)
    return model, lorasweep.get_variant(model)


def _logits(model: nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _reference_gradients(names, batches) -> dict[str, torch.Tensor]:
    """Plain autograd on a fresh, unadapted copy: the mean gradient of each target weight."""
    model = _bert().train()
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {n: model.get_submodule(n).weight for n in names}
    for w in weights.values():
        w.requires_grad_(True)
    for batch in batches:
        model(**batch).loss.backward()
    return {n: w.grad / len(batches) for n, w in weights.items()}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()))


def _close(actual, expected, rel=1e-4, msg=None):
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=rel * scale, rtol=0, msg=msg)


# ------------------------------------------------------------------------- every data-driven key
@pytest.mark.parametrize("key", KEYS)
def test_prepare_uses_the_batches_and_restores_the_flags(key):
    model, variant = _adapt(key)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    batches, pulled = _batches(3), []

    def stream():
        for batch in batches:
            pulled.append(batch)
            yield batch

    facts = variant.prepare(model, stream())
    json.dumps(facts)  # recorded as a trial attribute
    assert facts["batches"] == len(pulled) <= 3  # every batch given; eva may stop early
    if key != "eva":
        assert facts["batches"] == 3 and facts["loss"] == "model"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())
    assert not model.training  # the mode it had
    for layer in variant.layers.values():
        assert not layer.base.weight.requires_grad


@pytest.mark.parametrize("key", KEYS)
def test_starts_as_the_base_model_after_prepare(key):
    model, variant = _adapt(key)
    batches = _batches()
    variant.prepare(model, batches)
    for batch in batches:
        torch.testing.assert_close(
            _logits(model, batch), _logits(_bert(), batch), atol=1e-5, rtol=0
        )
    for layer in variant.layers.values():
        if key == "eva":
            assert not layer.has_initial_update and not layer.lora_B.any()
        else:
            assert layer.lora_B0.abs().sum() > 0 and torch.equal(layer.lora_B0, layer.lora_B)


@pytest.mark.parametrize("key", KEYS)
def test_an_unprepared_layer_is_plain_lora(key):
    model, variant = _adapt(key)
    batch = _batches(1)[0]
    torch.testing.assert_close(_logits(model, batch), _logits(_bert(), batch), atol=1e-6, rtol=0)
    for layer in variant.layers.values():
        assert layer.lora_A.shape == (RANK, layer.in_features) and not layer.lora_B.any()


@pytest.mark.parametrize("key", KEYS)
def test_estimation_failures_are_variant_errors(key):
    model, variant = _adapt(key)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(VariantError, match="no batches"):
        variant.prepare(model, [])
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[5] = float("nan")
    batch = _batches(1)[0]
    batch["input_ids"][1, 1] = 5
    with pytest.raises(VariantError, match="non-finite"):
        variant.prepare(model, [batch])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(not layer._forward_pre_hooks for layer in variant.layers.values())


# ---------------------------------------------------------------------------- gradient estimate
def test_gradient_estimate_is_plain_autograd_and_changes_nothing():
    model, variant = _adapt("lora-ga")
    batches = _batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads, facts = estimate_gradients(model, variant.layers, batches)
    assert facts["batches"] == 3 and facts["gradient_sums"] == len(variant.layers)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    expected = _reference_gradients(list(variant.layers), batches)
    for name, g in grads.items():
        assert g.dtype == torch.float32
        _close(g, expected[name], rel=1e-5, msg=name)
    torch.testing.assert_close(_logits(model, batches[0]), _logits(_bert(), batches[0]))


def _loose_fp32_tensors(shapes) -> dict[tuple[int, int], int]:
    """How many plain fp32 tensors (parameters excluded) of each shape this process holds."""
    gc.collect()
    counts = dict.fromkeys(shapes, 0)
    for o in gc.get_objects():
        if type(o) is torch.Tensor and o.dtype == torch.float32 and tuple(o.shape) in counts:
            counts[tuple(o.shape)] += 1
    return counts


@pytest.mark.parametrize("grad_device", ["same", "cpu"])
def test_gradient_memory_is_one_fp32_sum_per_target_weight(grad_device):
    model, variant = _adapt("lora-ga", grad_device=grad_device)
    shapes: dict[tuple[int, int], int] = {}
    for layer in variant.layers.values():
        shape = tuple(layer.base.weight.shape)
        shapes[shape] = shapes.get(shape, 0) + 1
    baseline = _loose_fp32_tensors(shapes)
    held = []

    def stream():
        for i, batch in enumerate(_batches(3)):
            if i:  # between backward passes: the sums only, no gradient left on any weight
                now = _loose_fp32_tensors(shapes)
                held.append({s: now[s] - baseline[s] for s in shapes})
                assert all(layer.base.weight.grad is None for layer in variant.layers.values())
            yield batch

    facts = variant.prepare(model, stream())
    assert held == [shapes, shapes]
    numel = sum(layer.base.weight.numel() for layer in variant.layers.values())
    assert facts["gradient_sums"] == len(variant.layers)
    assert facts["gradient_sums_mb"] == round(numel * 4 / 2**20, 3)
    assert facts["peak_extra_memory_mb"] >= facts["gradient_sums_mb"]


# --------------------------------------------------------------------------- lora-ga, lora-one
def _svd(g: torch.Tensor):
    return torch.linalg.svd(g.double(), full_matrices=False)


def test_lora_ga_first_step_follows_the_top_2r_gradient():
    model, variant = _adapt("lora-ga", niter=0)
    batches = _batches()
    variant.prepare(model, batches)
    grads = _reference_gradients(list(variant.layers), batches)
    model.train()
    for batch in batches:
        model(**batch).loss.backward()
    for name, layer in variant.layers.items():
        g, r = grads[name], RANK
        u, s, vh = _svd(g)
        a, b = layer.lora_A.detach(), layer.lora_B.detach()
        zeta2 = layer.out_features**0.5 / 16
        # A spans G's top-r right singular vectors, B its left singular vectors r..2r
        assert _cos(vh[0].float() @ a.t() @ a / zeta2, vh[0].float()) > 1 - 1e-5, name
        assert _cos(b @ b.t() @ u[:, r].float() / zeta2, u[:, r].float()) > 1 - 1e-5, name
        # one gradient step changes s·BA along G_2r: gB A + B gA = s ζ² G_2r
        grad_a, grad_b = layer.lora_A.grad / len(batches), layer.lora_B.grad / len(batches)
        step = grad_b @ a + b @ grad_a
        g_2r = ((u[:, : 2 * r] * s[: 2 * r]) @ vh[: 2 * r]).float()
        _close(step, layer.scaling * zeta2 * g_2r, rel=1e-3, msg=name)
        assert _cos(step, g) > 0.5, name


def test_lora_one_starts_on_a_normalised_gradient_descent_step():
    model, variant = _adapt("lora-one", niter=0)
    batches = _batches()
    variant.prepare(model, batches)
    grads = _reference_gradients(list(variant.layers), batches)
    for name, layer in variant.layers.items():
        g = grads[name]
        u, s, vh = _svd(g)
        g_r = ((u[:, :RANK] * s[:RANK]) @ vh[:RANK]).float()
        product = layer.lora_B0 @ layer.lora_A0
        _close(product, -g_r / (128 * float(s[0])), rel=1e-4, msg=name)
        # aligned with -G: its top singular direction comes first
        assert _cos(product, -g) > 0.5, name
        assert float(u[:, 0].float() @ product @ vh[0].float()) < 0, name


# ------------------------------------------------------------------------------------------ gora
def _features(variant) -> dict[str, int]:
    return {n: layer.in_features + layer.out_features for n, layer in variant.layers.items()}


def test_gora_keeps_the_budget_and_follows_importance():
    model, variant = _adapt("gora", r_min=1, r_max=64)  # no clipping: the rounding only
    batches = _batches()
    facts = variant.prepare(model, batches)
    grads = _reference_gradients(list(variant.layers), batches)
    base = _bert()
    importance = {
        n: float((base.get_submodule(n).weight.detach() * g).norm()) for n, g in grads.items()
    }
    total = sum(importance.values())
    for name, value in importance.items():
        assert facts["importance"][name] == pytest.approx(value / total, abs=1e-5)
    features, ranks = _features(variant), facts["ranks"]
    target = RANK * sum(features.values())
    used = sum(ranks[n] * features[n] for n in ranks)
    assert facts["budget"] == {"target": target, "used": used}
    assert target - sum(features.values()) < used <= target + len(ranks) / 2
    assert len(set(ranks.values())) > 1, "importances differ, so should the ranks"
    for cost in set(features.values()):  # at one cost per rank, more importance -> more rank
        same = sorted((importance[n], ranks[n]) for n in ranks if features[n] == cost)
        assert [r for _, r in same] == sorted(r for _, r in same)
    for name, layer in variant.layers.items():
        assert layer.rank == ranks[name] == layer.lora_A.shape[0] == layer.lora_B.shape[1]
    trainable = sum(p.numel() for _, p in variant.adapter_parameters())
    assert trainable == used


def test_gora_ranks_stay_within_their_bounds():
    model, variant = _adapt("gora", targets=["query", "intermediate.dense"], rank=8)
    facts = variant.prepare(model, _batches())
    for name, layer in variant.layers.items():
        assert 4 <= facts["ranks"][name] <= min(32, layer.in_features, layer.out_features)


def test_gora_init_is_a_descent_step_on_the_gradient():
    model, variant = _adapt("gora")
    batches = _batches()
    variant.prepare(model, batches)
    grads = _reference_gradients(list(variant.layers), batches)
    gamma = variant.options.gamma
    for name, layer in variant.layers.items():
        a0, g = layer.lora_A0.double(), grads[name].double()
        projection = a0.t() @ torch.linalg.inv(a0 @ a0.t()) @ a0
        assert layer.scaling == ALPHA / RANK  # the configured rank's scale, whatever r_i
        _close(layer.initial_update(), (-(gamma / RANK) * g @ projection).float(), msg=name)
        assert float((layer.initial_update() * grads[name]).sum()) < 0, name
    # moving the base weights along the recorded init lowers the loss
    step = {n: layer.initial_update() for n, layer in variant.layers.items()}
    moved = _bert()
    with torch.no_grad():
        for name, delta in step.items():
            moved.get_submodule(name).weight.add_(delta / gamma)
    loss = [sum(float(m(**b).loss) for b in batches) for m in (_bert(), moved)]
    assert loss[1] < loss[0]


def test_gora_a_init_gaussian_solves_b_from_the_reference_codes_a():
    model, variant = _adapt("gora", a_init="gaussian")
    variant.prepare(model, _batches())
    a = torch.cat([(layer.lora_A0 * layer.in_features**0.5).flatten()
                   for layer in variant.layers.values()])
    assert a.numel() > 1000
    assert float(a.std()) == pytest.approx(1.0, rel=0.1)  # N(0, 1/in) in every layer
    assert float(a.abs().max()) > 1.0  # not the Kaiming-uniform bound 1/sqrt(in)
    gamma = variant.options.gamma
    grads = _reference_gradients(list(variant.layers), _batches())
    for name, layer in variant.layers.items():  # B is still the compressed descent step
        a0 = layer.lora_A0.double()
        projection = a0.t() @ torch.linalg.inv(a0 @ a0.t()) @ a0
        want = (-(gamma / RANK) * grads[name].double() @ projection).float()
        _close(layer.initial_update(), want, msg=name)


# ------------------------------------------------------------------------------------------- eva
def test_eva_keeps_the_budget_with_orthonormal_rows():
    model, variant = _adapt("eva")
    facts = variant.prepare(model, _batches())
    ranks = facts["ranks"]
    assert sum(ranks.values()) == RANK * len(variant.layers) == facts["budget"]["used"]
    assert facts["pca_groups"] == 8  # q/k/v share one input: 4 distinct inputs per block
    for name, layer in variant.layers.items():
        assert 0 <= ranks[name] <= 2 * RANK and layer.lora_A.shape[0] == ranks[name]
        a = layer.lora_A.detach()
        torch.testing.assert_close(a @ a.t(), torch.eye(ranks[name]), atol=1e-5, rtol=0)
        assert layer.scaling == ALPHA / max(ranks[name], 1)  # its own rank, as the reference
    trainable = sum(p.numel() for _, p in variant.adapter_parameters())
    assert trainable == sum(r * _features(variant)[n] for n, r in ranks.items())


def test_eva_scale_configured_keeps_the_configured_rank_for_every_layer():
    model, variant = _adapt("eva", scale="configured")
    ranks = variant.prepare(model, _batches())["ranks"]
    assert len(set(ranks.values())) > 1  # the ranks were redistributed
    for layer in variant.layers.values():
        assert layer.scaling == ALPHA / RANK


def _layer_inputs(names, batch) -> dict[str, torch.Tensor]:
    """Inputs of each named linear layer of a fresh model, non-pad tokens only."""
    model, inputs = _bert(), {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda m, args, n=n: inputs.__setitem__(n, args[0][batch["attention_mask"].bool()])
        )
        for n in names
    ]
    _logits(model, batch)
    for h in hooks:
        h.remove()
    return inputs


def test_eva_is_the_pca_of_non_pad_inputs_with_the_budget_by_explained_variance():
    targets = ["query", "intermediate.dense", "output.dense"]  # 4 distinct inputs per block
    model, variant = _adapt("eva", targets=targets, niter=0)
    batch = _batches(1, size=6)[0]
    facts = variant.prepare(model, [batch])  # one batch: the PCA of its inputs, exactly
    ratios, components = {}, {}
    for name, x in _layer_inputs(list(variant.layers), batch).items():
        centered = x.double() - x.double().mean(0)
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
        ratios[name] = (s[: 2 * RANK] ** 2 / centered.square().sum()).tolist()
        components[name] = vh[: 2 * RANK].float()
    entries = sorted((-v, name) for name, vs in ratios.items() for v in vs)[
        : facts["budget"]["target"]
    ]
    expected = {n: sum(1 for _, m in entries if m == n) for n in ratios}
    assert facts["ranks"] == expected
    for name, layer in variant.layers.items():
        r = expected[name]
        overlap = (layer.lora_A.detach() @ components[name][:r].t()).diagonal().abs()
        torch.testing.assert_close(overlap, torch.ones(r), atol=1e-4, rtol=0, msg=name)

    # pad positions do not count: other pad tokens, the same init
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][other["attention_mask"] == 0] = 77
    again, variant_again = _adapt("eva", targets=targets, niter=0)
    variant_again.prepare(again, [other])
    for name, layer in variant.layers.items():
        torch.testing.assert_close(variant_again.layers[name].lora_A, layer.lora_A, msg=name)


class _TwoInputs(nn.Module):
    """Two layers reading the two halves of the input."""

    def __init__(self):
        super().__init__()
        self.spread = nn.Linear(16, 8)
        self.concentrated = nn.Linear(16, 8)

    def forward(self, input):
        return self.spread(input[..., :16]) + self.concentrated(input[..., 16:])


def test_eva_gives_the_rank_to_the_components_that_explain_more_variance():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 16, generator=g)  # every direction explains 1/16
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g)).Q
    strong = torch.randn(200, 6, generator=g) * 3  # 6 directions explain ~1/6 each
    concentrated = strong @ basis[:, :6].t() + 0.01 * torch.randn(200, 16, generator=g)
    data = torch.cat([spread, concentrated], dim=1)
    model = _TwoInputs()
    lorasweep.apply_variant(
        model, "eva", rank=4, alpha=8, target_modules=["spread", "concentrated"]
    )
    facts = lorasweep.get_variant(model).prepare(
        model, [{"input": data[:100]}, {"input": data[100:]}]
    )
    assert facts["ranks"] == {"spread": 2, "concentrated": 6}
    a = model.concentrated.lora_A.detach()
    projected = a @ basis[:, :6]  # its rows lie in the strong subspace
    torch.testing.assert_close(projected.norm(dim=1), torch.ones(6), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------- peft as an oracle
@torch.no_grad()
def test_lora_ga_matches_peft_up_to_its_documented_scaling():
    require("peft")
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraGAConfig, preprocess_loraga

    r, targets, batches = 8, ["query", "value"], _batches()
    model, variant = _adapt("lora-ga", targets=targets, rank=r, alpha=16, niter=0)
    ours_g, _ = estimate_gradients(model, variant.layers, batches)
    variant.prepare(model, batches)

    reference = _bert()
    config = LoraConfig(
        r=r,
        lora_alpha=16,
        target_modules=targets,
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=16),
    )

    def train_step():  # peft's gradient estimate over the same batches
        for batch in batches:
            reference(**batch).loss.backward()

    with torch.enable_grad():
        preprocess_loraga(reference, config, train_step)
    peft_g = {
        n: m._peft_loraga_grad.clone()
        for n, m in reference.named_modules()
        if hasattr(m, "_peft_loraga_grad")
    }
    peft_model = get_peft_model(reference, config)
    assert sorted(peft_g) == sorted(variant.layers)
    for name, layer in variant.layers.items():
        _close(ours_g[name], peft_g[name], rel=1e-6, msg=name)  # the same G
        peer = peft_model.base_model.model.get_submodule(name)
        pa, pb = peer.lora_A["default"].weight, peer.lora_B["default"].weight
        zeta = layer.out_features**0.25 / math.sqrt(16)
        s = _svd(ours_g[name])[1][r : 2 * r].float()
        # A: the same rows up to sign; ours carry ζ
        a = layer.lora_A / zeta
        torch.testing.assert_close((a @ pa.t()).diagonal().abs(), torch.ones(r), atol=1e-4, rtol=0)
        # B: the same columns up to sign; peft's carry S[r:2r] (ours do not)
        b = layer.lora_B * s
        sign = torch.sign((b * pb).sum(0))
        _close(b * sign, pb, rel=1e-4, msg=name)
        assert layer.scaling == pytest.approx(peer.scaling["default"])
    batch = batches[0]  # both start as the base model
    torch.testing.assert_close(
        _logits(peft_model, batch), _logits(_bert(), batch), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(_logits(model, batch), _logits(_bert(), batch), atol=1e-5, rtol=0)


@torch.no_grad()
def test_eva_matches_peft_eva():
    require("peft")
    from peft import EvaConfig, LoraConfig
    from peft.tuners.lora import get_eva_state_dict

    r, targets = 8, ["query", "attention.output.dense", "intermediate.dense"]
    # the same batch twice: both PCAs converge at step 2 whatever their stopping rules' details
    batch = _batches(1, size=8, length=16, labels=False)[0]
    batches = [batch, batch]
    model, variant = _adapt("eva", targets=targets, rank=r, alpha=16, niter=0, tau=0.9)
    facts = variant.prepare(model, batches)
    assert facts["converged"] and facts["early_stop_step"] == 2
    config = LoraConfig(
        r=r,
        lora_alpha=16,
        target_modules=targets,
        init_lora_weights="eva",
        eva_config=EvaConfig(rho=2.0, tau=0.9, use_label_mask=False),
    )
    state = get_eva_state_dict(_bert(), batches, config, show_progress_bar=False)
    assert sorted(state) == sorted(variant.layers)
    for name, layer in variant.layers.items():
        theirs = state[name].float()
        assert layer.lora_A.shape == theirs.shape, name  # the same rank
        overlap = (layer.lora_A @ theirs.t()).diagonal().abs()
        torch.testing.assert_close(overlap, torch.ones(len(overlap)), atol=1e-4, rtol=0, msg=name)


def test_incremental_pca_matches_peft_on_a_stream():
    require("peft")
    from peft.utils.incremental_pca import IncrementalPCA as PeftIncrementalPCA

    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(24, 24, generator=g) * torch.linspace(3, 0.1, 24)
    ours, theirs = IncrementalPCA(8, tau=0.9, niter=0), PeftIncrementalPCA(n_components=8)
    for _ in range(4):
        x = torch.randn(40, 24, generator=g) @ mixing.t() + 1.5
        ours.fit(x)
        theirs.partial_fit(x)
    overlap = (ours.components.double() @ theirs.components_.double().t()).diagonal().abs()
    torch.testing.assert_close(overlap, torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        ours.singular.double(), theirs.singular_values_.double(), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(
        ours.ratio, theirs.explained_variance_ratio_.double(), rtol=1e-4, atol=0
    )


@pytest.mark.parametrize("key", ["lora-ga", "lora-one"])
def test_export_of_a_gradient_init_loads_in_peft(key, tmp_path):
    require("peft")
    from peft import PeftModel

    model, variant = _adapt(key, targets=["query", "value"])
    batches = _batches()
    variant.prepare(model, batches)
    with torch.no_grad():  # trained adapters differ from their initial update
        g = torch.Generator().manual_seed(3)
        for _, p in variant.adapter_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    lorasweep.save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 2 * RANK
    loaded = PeftModel.from_pretrained(_bert(), tmp_path).eval()  # on the untouched weights
    for batch in batches:
        torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("key", KEYS)
def test_prepare_on_cuda_with_a_bf16_base(key):
    model = _bert().to("cuda", torch.bfloat16)
    options = {} if key == "eva" else {"grad_device": "cpu"}
    lorasweep.apply_variant(
        model, key, rank=RANK, alpha=ALPHA, target_modules="all-linear", **options
    )
    variant = lorasweep.get_variant(model)
    batches = [{k: v.cuda() for k, v in b.items()} for b in _batches()]
    before = [_logits(model, b).float() for b in batches]
    facts = variant.prepare(model, batches)
    json.dumps(facts)
    for batch, expected in zip(batches, before, strict=True):  # bf16 residuals round
        torch.testing.assert_close(_logits(model, batch).float(), expected, atol=0.05, rtol=0)
    for _, p in variant.adapter_parameters():
        assert p.device.type == "cuda" and p.dtype == torch.float32
    loss = model(**batches[0]).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for _, p in variant.adapter_parameters())


# ----------------------------------------------------------------------------------- end to end
def test_run_trial_records_the_estimation(tiny_bert_dir, tmp_path):
    from lorasweep.train.trial import run_trial

    spec = TrialSpec(
        sweep="s",
        study="st",
        storage="",
        trial_number=0,
        model=str(tiny_bert_dir),
        task="sentiment",
        task_options={"eval_limit": 16},
        model_options={},
        variant=VariantSpec("lora-ga", rank=4, alpha=8),
        lr=1e-3,
        seed=0,
        train=TrainConfig(steps=2, batch_size=8, max_length=32, estimation_batches=2),
        run_dir=str(tmp_path / "t"),
    )
    result = run_trial(spec)
    prepared = result.attrs["prepare"]
    assert prepared["batches"] == 2 and prepared["seconds"] > 0
    assert prepared["loss"] == "model"
    json.dumps(result.attrs["prepare"])
