"""The Clay encoder and the embedding engine.

- :mod:`~clay_core.encoder.model`: the encoder (presets, checkpoints, ids);
- :mod:`~clay_core.encoder.inputs`: raw chips + metadata -> :class:`ModelInputs`;
- :mod:`~clay_core.encoder.single` / :mod:`~clay_core.encoder.engine`: embedding on one
  device / on any device (``clay_core.encoder.dask_engine`` fans out over a Dask cluster of
  CPU or GPU workers and is imported only when one is used);
- :mod:`~clay_core.encoder.store`: the per-partition embedding Zarr store;
- :mod:`~clay_core.encoder.stage`: the embeddings stage (:func:`embed_partition`).
"""

from clay_core.encoder.engine import embed_chips
from clay_core.encoder.inputs import (
    ModelInputs,
    band_stats,
    encode_latlon,
    encode_time,
    model_inputs,
    normalize,
    waves_for,
)
from clay_core.encoder.model import (
    PRESETS,
    ClayEncoder,
    LoadedEncoder,
    build_encoder,
    count_parameters,
    file_sha256,
    forward_flops,
    load_encoder,
    load_weights_only,
    model_id,
    preset_name,
    resolve_config,
)
from clay_core.encoder.single import EmbeddingResult, Progress, embed_inputs, resolve_device
from clay_core.encoder.stage import EmbedResult, embed_partition
from clay_core.encoder.store import open_embeddings, read_observations, write_embeddings

__all__ = [
    "PRESETS", "ClayEncoder", "LoadedEncoder", "build_encoder", "load_encoder", "load_weights_only", "resolve_config",
    "preset_name", "file_sha256", "model_id", "count_parameters", "forward_flops",
    "ModelInputs", "model_inputs", "encode_time", "encode_latlon", "normalize", "waves_for", "band_stats",
    "EmbeddingResult", "Progress", "embed_inputs", "embed_chips", "resolve_device",
    "write_embeddings", "open_embeddings", "read_observations",
    "EmbedResult", "embed_partition",
]
