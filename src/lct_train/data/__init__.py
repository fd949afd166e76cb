"""Scene shards: format, streaming loader, token-budget packing, augmentation.

Entry points: :class:`DataConfig` (Hydra group ``data``), :class:`SceneLoader` (yields
:class:`PackedScenes`), and the codecs / text encoders in ``codecs`` and ``text_encoders``.
"""

from lct_train.data.config import DataConfig, SourceConfig
from lct_train.data.loader import LoaderStateMismatchError, SceneLoader
from lct_train.data.packing import PackedScenes
from lct_train.data.schema import BadSampleError, DatasetInfo
from lct_train.data.stream import EmptyDatasetError
from lct_train.data.worker import DataQualityError

__all__ = [
    "BadSampleError",
    "DataConfig",
    "DataQualityError",
    "DatasetInfo",
    "EmptyDatasetError",
    "LoaderStateMismatchError",
    "PackedScenes",
    "SceneLoader",
    "SourceConfig",
]
