"""Long-context MMDiT: layers, interleaved 3D RoPE, packed-batch metadata, attention backends."""
