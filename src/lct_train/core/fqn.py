"""Parameter FQNs seen through activation-checkpoint / compile / FSDP wrappers."""

from __future__ import annotations

WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def clean_fqn(name: str) -> str:
    """The bare model's FQN of a parameter seen through AC / compile wrappers."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name
