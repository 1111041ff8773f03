"""Default target modules per architecture family, on tiny real models."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaModel,
)

from lorasweep.variants import resolve_targets

_SMALL = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 32, "max_position_embeddings": 40}


def _leaves(names):
    return sorted({n.split("layer.")[-1].split(".", 1)[-1] for n in names})


def test_roberta_targets_attention_q_k_v_o():
    torch.manual_seed(0)
    names = resolve_targets(RobertaModel(RobertaConfig(**_SMALL)), None)
    assert len(names) == 2 * 4
    assert _leaves(names) == ["attention.output.dense", "attention.self.key",
                              "attention.self.query", "attention.self.value"]


def test_llama_targets_q_k_v_o():
    names = resolve_targets(LlamaForCausalLM(LlamaConfig(**_SMALL, num_key_value_heads=2)), None)
    assert sorted({n.rsplit(".", 1)[-1] for n in names}) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert len(names) == 2 * 4


def test_bert_keeps_query_value_and_all_linear_skips_heads():
    model = BertModel(BertConfig(**_SMALL))
    assert sorted({n.rsplit(".", 1)[-1] for n in resolve_targets(model, None)}) == ["query", "value"]
    everything = resolve_targets(model, "all-linear")
    assert not any(n.endswith("pooler.dense") for n in everything) and len(everything) == 2 * 6
