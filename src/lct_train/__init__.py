"""lct-train: Long Context Tuning of video diffusion transformers for multi-shot scenes."""

__version__ = "0.1.0"
