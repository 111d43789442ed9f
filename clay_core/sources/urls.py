"""URLs in messages and ids: no user info, no signatures or tokens."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact", "strip_url"]

_SECRET_QS = re.compile(
    r"(?i)\b((?:x-amz-)?(?:signature|security-token|credential|token|sig|se|sv|skoid|sktid|"
    r"skt|ske|sks|skv|key|apikey|api_key|access_token|password|secret))=[^&\s'\"]+"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """Remove user info and signature/token query values from URLs inside ``text``."""
    return _SECRET_QS.sub(r"\1=***", _USERINFO.sub(r"\1", str(text)))


def strip_url(url: str) -> str:
    """URL without user info, query or fragment (for messages and ids)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc.rsplit("@", 1)[-1], p.path, "", ""))
