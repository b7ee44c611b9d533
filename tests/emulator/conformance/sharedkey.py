"""SharedKey signing written from BATCH-NOTES.md, independent of the SDK and of the emulator.

The conformance suite signs its raw requests with this helper, so every example that the
emulator accepts is also a check that the emulator verifies the documented string-to-sign
(and not merely whatever the SDK happens to send).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

# The standard headers whose values enter the string-to-sign, in this order.
STANDARD_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def string_to_sign(method: str, url: str, headers: Mapping[str, str], account: str) -> str:
    """The canonical text of BATCH-NOTES.md "SharedKey signature" for one request.

    `url` is the request target as sent (absolute or path-only): its path is used raw
    (still percent-encoded), its query values decoded.
    """
    lowered = {name.lower(): value for name, value in headers.items() if value}
    if method.upper() not in ("GET", "HEAD"):
        lowered.setdefault("content-length", "0")
    lines = [method.upper()]
    lines.extend(lowered.get(name, "") for name in STANDARD_HEADERS)
    text = "\n".join(lines) + "\n"
    for name in sorted(name for name in lowered if "ocp-" in name):
        text += f"{name}:{lowered[name]}\n"
    parts = urlsplit(url)
    text += f"/{account}{parts.path}"
    first_values: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        first_values.setdefault(name, value)
    for name in sorted(first_values):
        if first_values[name]:
            text += f"\n{name}:{first_values[name]}"
    return text


def signature(key: str, text: str) -> str:
    """base64(HMAC-SHA256(base64decode(key), utf8(text)))."""
    mac = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def authorization(method: str, url: str, headers: Mapping[str, str], account: str,
                  key: str) -> str:
    """The value of the Authorization header for this request."""
    text = string_to_sign(method, url, headers, account)
    return f"SharedKey {account}:{signature(key, text)}"
