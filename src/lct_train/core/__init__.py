"""The lowest layer: what several packages share and nothing of theirs.

Checkpoint layout, safetensors I/O, FQN cleaning, the error types, the dtype table and the
rectified-flow arithmetic. Imports only torch / safetensors / the standard library; every
other ``lct_train`` package may import it (the layer contracts live in setup.cfg).
"""
