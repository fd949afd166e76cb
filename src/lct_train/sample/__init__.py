"""Multi-shot sampling: joint, conditioned, auto-regressive (KV cache), history pool."""
