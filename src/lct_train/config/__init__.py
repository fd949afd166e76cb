"""Structured configs registered with Hydra, and their validation."""
