"""The GDAL configuration used for every remote read (``https://`` and ``s3://``).

Covers a local S3-compatible endpoint (``AWS_S3_ENDPOINT`` + ``AWS_HTTPS=NO`` +
``AWS_VIRTUAL_HOSTING=FALSE``), anonymous access (``AWS_NO_SIGN_REQUEST=YES``) and
requester-pays buckets (``AWS_REQUEST_PAYER=requester``). Credentials are never put in the
options: when a request must be signed GDAL takes them from the usual ``AWS_*`` environment
variables or ``~/.aws`` files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import rasterio

from clay_core.errors import ConfigError
from clay_core.sources.urls import redact

__all__ = ["gdal_env_options", "gdal_env"]


def _split_endpoint(endpoint: str) -> tuple[str, bool]:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"s3_endpoint {redact(endpoint)!r} is not a URL such as 'http://127.0.0.1:9000' "
            "or 'https://s3.example.com'"
        )
    host = parts.netloc.rsplit("@", 1)[-1]
    return host + parts.path.rstrip("/"), parts.scheme == "https"


def gdal_env_options(
    s3_endpoint: str | None = None,
    aws_anonymous: bool = True,
    requester_pays: bool = False,
    timeout: float = 20,
    aws_region: str | None = None,
    max_retry: int = 2,
) -> dict[str, Any]:
    """GDAL config options for reading COGs over ``https://`` and ``s3://``."""
    t = max(1, int(math.ceil(float(timeout))))
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per file
        "GDAL_HTTP_TIMEOUT": t,
        "GDAL_HTTP_CONNECTTIMEOUT": t,
        "GDAL_HTTP_MAX_RETRY": int(max_retry),  # retried on 429/5xx only
        "GDAL_HTTP_RETRY_DELAY": 0.5,
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "VSI_CACHE": "TRUE",
        # no cross-open cache of remote files: a failed (e.g. unsigned) attempt or a
        # re-uploaded object must not be remembered for the life of the process
        "CPL_VSIL_CURL_NON_CACHED": "/vsis3/:/vsicurl/:/vsigs/:/vsiaz/",
    }
    if s3_endpoint:
        host, https = _split_endpoint(s3_endpoint)
        opts["AWS_S3_ENDPOINT"] = host
        opts["AWS_HTTPS"] = "YES" if https else "NO"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style: http://host/bucket/key
    if aws_anonymous:
        opts["AWS_NO_SIGN_REQUEST"] = "YES"
    else:
        opts["AWS_NO_SIGN_REQUEST"] = "NO"
    if requester_pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    if aws_region:
        opts["AWS_REGION"] = aws_region
    return opts


@contextmanager
def gdal_env(**kwargs: Any) -> Iterator[rasterio.Env]:
    """``rasterio.Env`` with :func:`gdal_env_options` (no boto3 session lookups)."""
    from rasterio.session import DummySession

    with rasterio.Env(session=DummySession(), **gdal_env_options(**kwargs)) as env:
        yield env
