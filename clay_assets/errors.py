"""Configuration errors end a step at once; retries are for I/O.

The scene-reading assets retry (catalogues and object stores time out now and then), but a
retry cannot fix a wrong tile, a bad setting or a refused file, and three identical tracebacks
only bury the one line that says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure

from clay_core.errors import ConfigError, UnknownPlatformError, UnknownTileError

__all__ = ["no_retry_for_config_errors"]

CONFIG_ERRORS = (ConfigError, UnknownTileError, UnknownPlatformError)


@contextmanager
def no_retry_for_config_errors() -> Iterator[None]:
    """Re-raise configuration errors as a ``Failure`` that the step's retry policy skips."""
    try:
        yield
    except CONFIG_ERRORS as exc:
        raise Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
