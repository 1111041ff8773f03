"""Contract tests every registered variant must pass (house rule 4).

Parametrised over ``lorasweep.variants.registry()``, so a new variant is covered the moment its
file registers it. Each runs on three real tiny models built in code: an ``nn.Sequential`` MLP
(targets by name, a trained head), a random BERT classifier (``all-linear``, ``classifier`` as a
module to save) and a random Llama causal LM (the architecture's default targets).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import tiny_bert, tiny_llama
from torch import nn

import lorasweep
from lorasweep.variants import VariantError, get_variant_class, registry
from lorasweep.variants.base import module_type

VARIANTS = sorted(registry())
RANK, ALPHA = 4, 8.0

#: Trainable adapter parameters of one wrapped ``in -> out`` linear layer, per method.
#: A variant missing here is reported (skipped with the reason) by the count test.
PARAM_FORMULAS: dict[str, Callable[[int, int, int], int]] = {
    "lora": lambda r, i, o: r * (i + o),
    "rslora": lambda r, i, o: r * (i + o),
    "loraplus": lambda r, i, o: r * (i + o),
    "pissa": lambda r, i, o: r * (i + o),
    "dora": lambda r, i, o: r * (i + o) + o,
    # lambda r x n, gamma n x min(i, o); n = ceil(min(i, o, U) / r) frozen bases (U = 1024)
    "randlora": lambda r, i, o: -(-min(i, o, 1024) // r) * (r + min(i, o)),
    "hira": lambda r, i, o: r * (i + o),
    "melora": lambda r, i, o: r * (i + o) // 2,  # blocks n = 2: r/n x in/n + out/n x r/n, n times
    "delora": lambda r, i, o: r * (i + o) + 1,  # + lambda
    "aurora": lambda r, i, o: r * (i + o) + r * r + r * (5 + 3),  # + M, spline (grid + order)
    "milora": lambda r, i, o: r * (i + o),
    "olora": lambda r, i, o: r * (i + o),
    "nzlora": lambda r, i, o: r * (i + o),
    "moslora": lambda r, i, o: r * (i + o) + r * r,  # + mixer M
    # 8 experts of rank ceil(r/8) + router (8 x in, no bias)
    "loramoe": lambda r, i, o: 8 * -(-r // 8) * (i + o) + 8 * i,
    "goat": lambda r, i, o: 8 * -(-r // 8) * (i + o) + 8 * i,
    # built with init_r = ceil(1.5 r) (target_r = r): A, B and the diagonal E
    "adalora": lambda r, i, o: (3 * r + 1) // 2 * (i + o + 1),
    "relora": lambda r, i, o: r * (i + o),  # merged factors are buffers
    "lora-pro": lambda r, i, o: r * (i + o),
    "lora-ga": lambda r, i, o: r * (i + o),  # B0, A0 are buffers
    "lora-one": lambda r, i, o: r * (i + o),
    # ranks chosen from data by prepare (r: the layer's own rank r_i, 0 <= r_i <= min(i, o));
    # their budgets (Σ r_i (i + o) for GoRA, Σ r_i for EVA) are tested in test_data_driven_inits
    "gora": lambda r, i, o: r * (i + o),
    "eva": lambda r, i, o: r * (i + o),
}
#: Variants whose layers' ranks come from data: PARAM_FORMULAS gets each layer's own rank.
DATA_RANKED: set[str] = {"gora", "eva"}


def _by_type(layers: list[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    types: dict[str, list[tuple[int, int]]] = {}
    for kind, i, o in layers:
        types.setdefault(kind, []).append((i, o))
    return types


#: Trainable adapter parameters of a whole model, for methods whose layers share tensors:
#: ``(r, [(module type, in, out) per wrapped layer])``, the type as ``base.module_type`` gives it.
#: Used instead of ``PARAM_FORMULAS`` where a key is in both.
MODEL_PARAM_FORMULAS: dict[str, Callable[[int, list[tuple[str, int, int]]], int]] = {
    # private r-1 ranks per layer + shared 1·L per type (LoRA's count) + E of r-1+L per layer
    "rasa": lambda r, layers: sum(
        len(s) * r * (s[0][0] + s[0][1]) + len(s) * (r - 1 + len(s))
        for s in _by_type(layers).values()
    ),
    # shared A, B per type + an r x r M per layer
    "denselora": lambda r, layers: sum(
        r * (s[0][0] + s[0][1]) + len(s) * r * r for s in _by_type(layers).values()
    ),
}
#: Variants whose method does not promise to start as the base model.
NOT_STARTING_AS_BASE: set[str] = {
    # GOAT subtracts the unrouted sum of its SVD-seeded experts, s·Σ_e B0_e A0_e, but adds back
    # only the routed s·Σ_e g_e(x) B0_e A0_e x (input-dependent): no fixed residual cancels it
    # (as the paper; goat's exact_start=True option does start as base, tested in
    # test_moe_variants.py).
    "goat",
}


# ------------------------------------------------------------------------------ tiny models
@dataclass
class Case:
    kind: str
    build: Callable[[], nn.Module]  # same weights on every call
    inputs: dict[str, torch.Tensor]  # model(**inputs)
    target_modules: list[str] | str | None
    modules_to_save: list[str]
    n_layers: int  # wrapped layers expected


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 3)
    )


def _bert() -> nn.Module:
    return tiny_bert()


def _llama() -> nn.Module:
    return tiny_llama()  # k_proj/v_proj are 32 -> 16: layers of different shapes


def _token_inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # some padding
    return {"input_ids": ids, "attention_mask": mask}


CASES = {
    "mlp": Case(
        "mlp",
        _mlp,
        {"input": torch.randn(5, 12, generator=torch.Generator().manual_seed(1))},
        ["0", "2"],
        ["4"],
        2,
    ),
    # all-linear: q, k, v, attention output, intermediate, output (x2); pooler/classifier excluded
    "bert": Case("bert", _bert, _token_inputs(2), "all-linear", ["classifier"], 12),
    # default targets of model_type "llama": q, k, v, o (x2)
    "llama": Case("llama", _llama, _token_inputs(3), None, [], 8),
}


def _output(model: nn.Module, case: Case) -> torch.Tensor:
    out = model(**case.inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _apply(model: nn.Module, case: Case, key: str, **options) -> lorasweep.variants.Variant:
    """``key`` on ``case``'s targets of ``model``, at the tests' rank and alpha."""
    lorasweep.apply_variant(model, key, rank=RANK, alpha=ALPHA, target_modules=case.target_modules,
                            modules_to_save=case.modules_to_save, **options)
    return lorasweep.get_variant(model)


def _adapt(case: Case, key: str, **options) -> tuple[nn.Module, lorasweep.variants.Variant]:
    model = case.build()
    variant = _apply(model, case, key, **options)
    variant.prepare(model, [case.inputs])  # data-driven inits, where a variant has them
    return model, variant


@torch.no_grad()
def _perturb(variant, seed: int = 7) -> None:
    """Move every trainable tensor (adapters and saved modules) away from its initial value."""
    g = torch.Generator().manual_seed(seed)
    for _, p in variant.adapter_parameters() + variant.saved_module_parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g).to(p))


def _loss(model: nn.Module, case: Case) -> torch.Tensor:
    return _output(model, case).float().pow(2).mean()


def _ids(params) -> set[int]:
    return {id(p) for _, p in params}


def _assert_close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


case_param = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
variant_param = pytest.mark.parametrize("key", VARIANTS)


# ---------------------------------------------------------------------------------- contract
@variant_param
@case_param
def test_forward_shape_and_starts_as_base_model(key, case):
    base = case.build()
    with torch.no_grad():
        expected = _output(base, case)
    model, variant = _adapt(case, key)
    assert len(variant.layers) == case.n_layers
    with torch.no_grad():
        got = _output(model, case)
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    if key not in NOT_STARTING_AS_BASE:
        _assert_close(got, expected)


@variant_param
@case_param
def test_backward_reaches_adapter_tensors_only(key, case):
    model, variant = _adapt(case, key)
    _perturb(variant)
    trainable = _ids(variant.adapter_parameters()) | _ids(variant.saved_module_parameters())
    assert _ids((n, p) for n, p in model.named_parameters() if p.requires_grad) == trainable
    _loss(model, case).backward()
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
        else:
            assert not p.requires_grad and p.grad is None, f"frozen {name} got a gradient"
    for name, p in variant.adapter_parameters():
        assert p.grad.abs().sum() > 0, f"adapter tensor {name} got an all-zero gradient"


@variant_param
@case_param
def test_adamw_step_changes_only_trainable_tensors(key, case):
    model, variant = _adapt(case, key)
    _perturb(variant)
    trainable = _ids(variant.adapter_parameters()) | _ids(variant.saved_module_parameters())
    groups = variant.param_groups(1e-2, weight_decay=0.01)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)), "a tensor sits in two parameter groups"
    assert set(grouped) == trainable, "param_groups must hold exactly the trainable tensors"

    before = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    params = dict(model.named_parameters(remove_duplicate=False))  # shared tensors: every name
    optimizer = torch.optim.AdamW(groups)
    _loss(model, case).backward()
    variant.before_optimizer_step()
    optimizer.step()
    variant.after_optimizer_step(1, optimizer)

    after = model.state_dict(keep_vars=True)
    for name, old in before.items():
        new = after[name].detach()
        p = params.get(name)
        if p is not None and id(p) in trainable:
            assert not torch.equal(new, old), f"trainable {name} did not move"
        else:
            assert torch.equal(new, old), f"frozen {name} changed (must stay bitwise equal)"


@variant_param
@case_param
def test_save_load_round_trip(key, case, tmp_path):
    model, variant = _adapt(case, key)
    _perturb(variant)
    with torch.no_grad():
        expected = _output(model, case)
    lorasweep.save_adapter(model, tmp_path)

    fresh = lorasweep.load_adapter(case.build(), tmp_path)
    loaded = lorasweep.get_variant(fresh)
    assert type(loaded) is type(variant)
    assert loaded.describe() == variant.describe()
    with torch.no_grad():
        got = _output(fresh, case)
    _assert_close(got, expected, atol=1e-6)
    mine, theirs = variant.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(theirs[k], mine[k], atol=0, rtol=0, msg=k)


@variant_param
@case_param
def test_merge_equals_unmerged_and_unmerge_restores(key, case):
    model, variant = _adapt(case, key)
    if not variant.mergeable:  # nonlinear updates: merging must be refused, not approximated
        with pytest.raises(VariantError, match="cannot merge"):
            variant.merge()
        return
    _perturb(variant)
    weights = {n: layer.base.weight.detach().clone() for n, layer in variant.layers.items()}
    with torch.no_grad():
        unmerged = _output(model, case)
        variant.merge()
        merged = _output(model, case)
    _assert_close(merged, unmerged)
    assert any(
        not torch.equal(layer.base.weight, weights[n]) for n, layer in variant.layers.items()
    ), "merge left every weight unchanged"
    variant.unmerge()
    for n, layer in variant.layers.items():
        assert torch.equal(layer.base.weight, weights[n]), f"unmerge did not restore {n}"
    with torch.no_grad():
        again = _output(model, case)
    torch.testing.assert_close(again, unmerged, atol=0, rtol=0)


@variant_param
def test_merge_and_unload_leaves_the_plain_model(key):
    """The merged export's step: the update folded into plain layers, nothing of lorasweep left."""
    case = CASES["mlp"]
    model, variant = _adapt(case, key)
    if not variant.mergeable:
        with pytest.raises(VariantError, match=f"{key} is nonlinear in its input"):
            lorasweep.variants.merge_and_unload(model)
        return
    _perturb(variant)
    with torch.no_grad():
        adapted = _output(model, case)
    assert lorasweep.variants.merge_and_unload(model) is model
    with pytest.raises(VariantError, match="no lorasweep variant"):
        lorasweep.get_variant(model)
    assert not any(isinstance(m, lorasweep.variants.AdapterLayer) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        _assert_close(_output(model, case), adapted)


@variant_param
@case_param
def test_bf16_autocast_forward_backward_is_finite(key, case):
    model, variant = _adapt(case, key)
    _perturb(variant)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _output(model, case)
        loss = out.float().pow(2).mean()
    assert torch.isfinite(out).all()
    loss.backward()
    for name, p in variant.adapter_parameters() + variant.saved_module_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@variant_param
@case_param
def test_bf16_base_runs_without_autocast_with_fp32_adapters(key, case):
    """Evaluation and generation often run outside autocast: a bf16 base must still work."""
    model = case.build().to(torch.bfloat16)
    variant = _apply(model, case, key)
    _perturb(variant)
    inputs = {k: v.bfloat16() if v.is_floating_point() else v for k, v in case.inputs.items()}
    out = _output(model, dataclasses.replace(case, inputs=inputs))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    for name, p in variant.adapter_parameters():
        assert p.dtype == torch.float32, f"{name} should train in fp32"
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@variant_param
@case_param
def test_trainable_parameter_count_matches_formula(key, case):
    if key not in PARAM_FORMULAS and key not in MODEL_PARAM_FORMULAS:
        pytest.skip(f"no parameter-count formula recorded for {key!r} in PARAM_FORMULAS")
    model, variant = _adapt(case, key)
    if key in MODEL_PARAM_FORMULAS:
        layers = [
            (module_type(name), layer.base.in_features, layer.base.out_features)
            for name, layer in variant.layers.items()
        ]
        expected = MODEL_PARAM_FORMULAS[key](RANK, layers)
    else:
        ranks = {name: RANK for name in variant.layers}
        if key in DATA_RANKED:
            ranks = {name: layer.rank for name, layer in variant.layers.items()}
            for name, layer in variant.layers.items():
                assert 0 <= ranks[name] <= min(layer.base.in_features, layer.base.out_features)
        expected = sum(
            PARAM_FORMULAS[key](ranks[name], layer.base.in_features, layer.base.out_features)
            for name, layer in variant.layers.items()
        )
    assert sum(p.numel() for _, p in variant.adapter_parameters()) == expected
    heads = sum(p.numel() for _, p in variant.saved_module_parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected + heads


@variant_param
def test_key_is_the_file_name(key):
    """``variants/__init__.py``'s rule: the key is the file's name with ``-`` for ``_``."""
    module = get_variant_class(key).__module__
    assert module == f"lorasweep.variants.{key.replace('-', '_')}"


# ------------------------------------------------------------------------------- bad input
@variant_param
@pytest.mark.parametrize("rank", [0, -2, 2.5])
def test_bad_rank_is_rejected(key, rank):
    with pytest.raises(VariantError, match="rank"):
        lorasweep.apply_variant(_mlp(), key, rank=rank, target_modules=["0"])


@variant_param
def test_unknown_option_is_rejected(key):
    with pytest.raises(VariantError, match="no_such_option"):
        lorasweep.apply_variant(_mlp(), key, rank=2, target_modules=["0"], no_such_option=1)


def _bad_values(annotation) -> list[object]:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return {
        "int": ["three", 2.5, [1]],
        "float": ["fast", [1.0], None],
        "bool": ["maybe", 3],
        "str": [3, None],
    }.get(kind, [object()])


OPTION_CASES = [
    pytest.param(key, field.name, bad, id=f"{key}-{field.name}-{bad!r}")
    for key in VARIANTS
    for field in dataclasses.fields(get_variant_class(key).Options)
    for bad in _bad_values(field.type)
]


@pytest.mark.parametrize("key, option, bad", OPTION_CASES)
def test_bad_option_type_is_rejected(key, option, bad):
    with pytest.raises(VariantError, match=option):
        lorasweep.apply_variant(_mlp(), key, rank=2, target_modules=["0"], **{option: bad})


def test_option_strings_are_coerced():
    """CLI values arrive as strings; a well-formed one is accepted and typed."""
    for key in VARIANTS:
        for field in dataclasses.fields(get_variant_class(key).Options):
            default = getattr(get_variant_class(key).Options(), field.name)
            variant = get_variant_class(key)(2, 4, **{field.name: str(default)})
            assert getattr(variant.options, field.name) == default


def test_a_bad_option_type_is_named_in_words():
    with pytest.raises(VariantError, match="loraplus option ratio must be a number, got 'many'"):
        get_variant_class("loraplus")(2, 4, ratio="many")
    with pytest.raises(VariantError, match="lora-ga option niter must be an integer, got 1.5"):
        get_variant_class("lora-ga")(2, 4, niter=1.5)


@pytest.mark.parametrize("key, gamma", [("lora-ga", 16.0), ("lora-one", 128.0)])
def test_the_gradient_svd_inits_share_their_options(key, gamma):
    """LoRA-GA and LoRA-One: one options class, each its own gamma default; errors name the key."""
    cls = get_variant_class(key)
    assert cls.option_defaults() == {"grad_device": "same", "gamma": gamma, "niter": 4}
    for bad, message in (({"niter": -1}, f"{key} niter must be >= 0 (0 = exact SVD), got -1"),
                         ({"gamma": 0.0}, f"{key} gamma must be positive, got 0.0"),
                         ({"grad_device": "gpu"}, f"{key} grad_device must be 'same' or 'cpu'")):
        with pytest.raises(VariantError, match=re.escape(message)):
            cls(2, 4, **bad)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(VariantError, match="unknown variant 'nope'.*lora"):
        lorasweep.apply_variant(_mlp(), "nope", target_modules=["0"])


def test_list_variants_covers_the_registry():
    listed = lorasweep.list_variants()
    assert [v["key"] for v in listed] == VARIANTS
    for v in listed:
        assert v["summary"] and v["axis"] in lorasweep.variants.AXES
        assert get_variant_class(v["key"]).__doc__


# -------------------------------------------------------------------------- variant specifics
@pytest.mark.parametrize("ratio", [None, 4.0])
def test_loraplus_gives_b_ratio_times_the_learning_rate(ratio):
    options = {} if ratio is None else {"ratio": ratio}
    model, variant = _adapt(CASES["mlp"], "loraplus", **options)
    groups = {g["name"]: g for g in variant.param_groups(1e-3)}
    b_ids = {id(layer.lora_B) for layer in variant.layers.values()}
    a_ids = {id(layer.lora_A) for layer in variant.layers.values()}
    assert {id(p) for p in groups["adapter_B"]["params"]} == b_ids
    assert {id(p) for p in groups["adapter_A"]["params"]} == a_ids
    assert groups["adapter_B"]["lr"] == pytest.approx(1e-3 * (ratio or 16.0))
    assert groups["adapter_A"]["lr"] == pytest.approx(1e-3)
    assert groups["heads"]["lr"] == pytest.approx(1e-3)
