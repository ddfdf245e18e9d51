"""Decoder-only transformers (Llama / Qwen2 family), HF checkpoint I/O and tokenizers."""
