"""Registers the schema with Hydra, composes ``conf/train.yaml`` with overrides, and turns any
composition or validation failure into one line that names the offending key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lct_train.config.model_from import apply_model_from, model_from_deferred
from lct_train.config.schema import TrainConfig
from lct_train.core.errors import ConfigError
from lct_train.model.family import CONFIGS

SCHEMA_NAME = "train_schema"
ROOT_CONFIG = "train"
CONF_DIR_ENV = "LCT_CONF_DIR"


def register_schema() -> None:
    """Stores ``TrainConfig`` as ``train_schema`` (the first entry of conf/train.yaml's defaults)
    and each model family's config dataclass as ``model/<family>_schema`` (the first entry of a
    model preset's defaults: its keys, their types and defaults)."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=TrainConfig)
    for family, config_type in CONFIGS.items():
        store.store(group="model", name=f"{family}_schema", node=config_type)


def find_conf_dir() -> Path:
    """``$LCT_CONF_DIR``, else ``./conf`` when it holds train.yaml, else the configs shipped in
    the package (``lct_train/conf``: a wheel / non-editable install), else the repository's
    conf/ (a source checkout or an editable install)."""
    if os.environ.get(CONF_DIR_ENV):
        return Path(os.environ[CONF_DIR_ENV]).resolve()
    local = Path.cwd() / "conf"
    if (local / f"{ROOT_CONFIG}.yaml").is_file():
        return local.resolve()
    here = Path(__file__).resolve()
    shipped = here.parents[1] / "conf"  # site-packages/lct_train/conf
    if (shipped / f"{ROOT_CONFIG}.yaml").is_file():
        return shipped
    return here.parents[3] / "conf"  # src/lct_train/config/store.py -> repository root


def one_line_error(exc: BaseException) -> str:
    """The most specific message in an exception chain, on one line, key first when known."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, ConfigError):
            return str(err)
    for err in reversed(chain):
        key = getattr(err, "full_key", None)
        if isinstance(err, OmegaConfBaseException) and key:
            msg = str(getattr(err, "msg", "") or err).strip().splitlines()[0]
            return f"{key}: {msg}"
    lines = [ln.strip() for err in chain for ln in str(err).splitlines() if ln.strip()]
    # Hydra appends its config search path to "could not find" errors: not useful here.
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider="))]
    return " | ".join(dict.fromkeys(lines)) or type(exc).__name__


def _list_item_error(err: ConfigCompositionException,
                     overrides: Sequence[str]) -> ConfigError | None:
    """An unknown key inside a list override (``data.sources='[{pth: x}]'``): OmegaConf names
    only ``pth``; this finds the item and returns ``ConfigError('data.sources[0].pth', ...)``."""
    match = re.match(r"Could not override '([\w.]+)'", str(err))
    cause = err.__cause__ or err.__context__
    key = getattr(cause, "full_key", None)
    if match is None or not isinstance(cause, OmegaConfBaseException) or not key:
        return None
    target = match.group(1)
    for text in overrides:
        if not text.startswith(f"{target}="):
            continue
        value = OverridesParser.create().parse_overrides([text])[0].value()
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict) and key.split(".")[0] in item:
                    msg = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
                    return ConfigError(f"{target}[{i}].{key}", msg)
    return None


def compose_config(overrides: Sequence[str] = (), conf_dir: Path | None = None) -> TrainConfig:
    """Composes the run config into a typed, validated ``TrainConfig`` (raises; callers print
    ``one_line_error``)."""
    register_schema()
    conf_dir = conf_dir or find_conf_dir()
    if not (conf_dir / f"{ROOT_CONFIG}.yaml").is_file():
        raise ConfigError("conf", f"no {ROOT_CONFIG}.yaml in {conf_dir} (set ${CONF_DIR_ENV})")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3", job_name="lct_train"):
        try:
            cfg = compose(config_name=ROOT_CONFIG, overrides=model_from_deferred(overrides))
        except ConfigCompositionException as err:
            item = _list_item_error(err, overrides)
            if item is None:
                raise
            raise item from err
    OmegaConf.resolve(cfg)
    container = OmegaConf.to_container(cfg)
    apply_model_from(container, overrides)  # model_from=PATH: the model config of PATH
    # `+key=value` overrides bypass the struct flag; re-merging into the schema rejects them.
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), container)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "is required but has no value")
    return OmegaConf.to_object(cfg)  # builds the dataclasses: each validates itself


def to_dict(cfg: TrainConfig) -> dict:
    """Plain containers (lists for tuples), as recorded in a checkpoint's ``lct_meta.json``."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
