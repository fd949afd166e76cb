"""``SamplingDefaults``: the source model's sampling settings, carried by a model preset.

Not architecture: nothing in the model reads them. They ride along with the ``ModelConfig``
(its ``sampling`` block: ``conf/model/<preset>.yaml``, an export's ``config.json``, a
checkpoint's ``lct_meta.json``) so that ``lct-sample`` and in-training validation sample a
model the way its source model is sampled unless a scene file or a flag says otherwise.
``None`` = no preset value: the sampler's own default (``lct_train.sample.sampler``).

``negative_prompt`` is the text of the guidance's uncond branch (true CFG, e.g. Wan's official
negative prompt); ``None`` = the empty prompt, the embedding of prompt dropout (SPEC §5).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from lct_train.core.errors import ConfigError


@dataclass
class SamplingDefaults:
    steps: int | None = None  # Euler steps per generated shot
    guidance: float | None = None  # classifier-free guidance on the text (1 = no uncond branch)
    embedded_guidance: float | None = None  # value of a guidance embedding (distilled guidance)
    shift: float | None = None  # timestep shift of the sampling grid
    negative_prompt: str | None = None  # text of the uncond branch (None: the empty prompt)

    def __post_init__(self) -> None:
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise ConfigError("model.sampling.negative_prompt",
                              f"must be a string, got {self.negative_prompt!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(
                self.steps, int) or self.steps < 1):
            raise ConfigError("model.sampling.steps", f"must be an int >= 1, got {self.steps!r}")
        for name, low, rule in (("guidance", 1.0, ">= 1 (1 = no guidance)"),
                                ("embedded_guidance", 0.0, ">= 0"), ("shift", 0.0, "> 0")):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"model.sampling.{name}", f"must be a number, got {value!r}")
            ok = value > low if name == "shift" else value >= low
            if not ok:
                raise ConfigError(f"model.sampling.{name}", f"must be {rule}, got {value}")
            setattr(self, name, float(value))

    @classmethod
    def from_dict(cls, data: Any) -> SamplingDefaults:
        if isinstance(data, SamplingDefaults):
            return data
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("model.sampling", f"must be a mapping, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("model.sampling", f"unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def given(self) -> dict[str, Any]:
        """The values the preset sets (``None`` left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}
