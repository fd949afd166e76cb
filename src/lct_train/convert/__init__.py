"""Checkpoint conversion: DCP and safetensors, diffusers HunyuanVideo import/export."""
