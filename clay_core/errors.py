"""Errors that name the bad input and say how to fix it."""


class ClayError(Exception):
    """Base class for every error raised on purpose by clay_core."""


class ConfigError(ClayError, ValueError):
    """A configuration value is invalid (chip size, thresholds, preset names...)."""


class UnknownTileError(ClayError, KeyError):
    """A tile id is not a valid MGRS tile or is not served by the scene source."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown tile"


class UnknownPlatformError(ClayError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown platform"


class SceneError(ClayError):
    """A scene cannot be read: corrupt raster, missing band, unexpected CRS."""


class CheckpointError(ClayError):
    """A model checkpoint does not fit the requested encoder configuration."""


class DatabaseError(ClayError):
    """The vector database cannot be reached or used. Messages never carry passwords."""
