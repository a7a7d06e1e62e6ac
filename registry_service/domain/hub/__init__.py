"""Hugging Face Hub-compatible API: resolve, model info by revision, tree listing, HF-style errors."""
