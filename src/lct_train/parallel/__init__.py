"""Distributed set-up and parallelisation (activation checkpointing, compile, FSDP2)."""
