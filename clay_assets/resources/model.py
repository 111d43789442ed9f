"""The Clay encoder as a resource: a preset with seeded random weights, or a checkpoint file.
"""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr


class ClayModel(ConfigurableResource):
    """The Clay encoder: a preset with seeded random weights, or a checkpoint file.

    ``device='auto'`` uses CUDA when present, else the CPU.
    """

    preset: str = "tiny"
    checkpoint: Optional[str] = None
    device: str = "auto"
    batch_size: int = 8
    patch_tokens: bool = False
    seed: int = 0
    platform: str = "sentinel-2-l2a"

    _encoder = PrivateAttr(default=None)

    def load(self):
        """(encoder, device, model_id, checkpoint sha256 or None); loaded once per process."""
        from clay_core.encoder import engine as embed, model

        if self._encoder is None:
            device = embed.resolve_device(self.device)
            if self.checkpoint:
                enc = model.load_encoder(self.checkpoint, self.preset, device=device)
                sha = model.file_sha256(self.checkpoint)
            else:
                enc = model.build_encoder(self.preset, seed=self.seed).to(device)
                sha = None
            mid = model.model_id(self.preset, self.checkpoint, self.seed)
            self._encoder = (enc, device, mid, sha)
        return self._encoder
