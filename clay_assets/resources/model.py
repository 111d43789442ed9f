"""The Clay encoder as a resource: a preset with seeded random weights, or a checkpoint file.
"""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from clay_assets.resources.dask import DaskClientHold


class ClayModel(DaskClientHold, ConfigurableResource):
    """The Clay encoder: a preset with seeded random weights, or a checkpoint file.

    ``device='auto'`` uses CUDA when present, else the CPU. ``dask_scheduler``: fan embedding
    batches out over the Dask cluster at this address (CPU or GPU workers; each uses its own
    CUDA device when it has one); the client is held for the step (see ``resources.dask``).
    Without one, several local GPUs get a local CUDA cluster.
    """

    preset: str = "tiny"
    checkpoint: Optional[str] = None
    device: str = "auto"
    batch_size: int = 8
    patch_tokens: bool = False
    seed: int = 0
    platform: str = "sentinel-2-l2a"
    dask_scheduler: Optional[str] = None

    _encoder = PrivateAttr(default=None)

    def load(self):
        """The encoder with what identifies its weights (``LoadedEncoder``); loaded once per process."""
        from clay_core.encoder import LoadedEncoder, build_encoder, file_sha256, load_encoder, model_id, resolve_device

        if self._encoder is None:
            device = resolve_device(self.device)
            if self.checkpoint:
                enc = load_encoder(self.checkpoint, self.preset, device=device)
                sha = file_sha256(self.checkpoint)
            else:
                enc = build_encoder(self.preset, seed=self.seed).to(device)
                sha = None
            self._encoder = LoadedEncoder(enc, device, model_id(self.preset, self.checkpoint, self.seed), self.preset,
                                          sha)
        return self._encoder
