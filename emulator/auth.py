"""SharedKey verification, byte-for-byte the string the azure-batch SDK signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

SIGNED_HEADERS = (
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


def string_to_sign(
    method: str, raw_path: str, query: str, headers: Mapping[str, str], account: str
) -> str:
    """The canonical string (BATCH-NOTES.md "SharedKey signature")."""
    values = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in values:
        values["content-length"] = "0"
    text = method + "\n" + "\n".join(values.get(h, "") for h in SIGNED_HEADERS) + "\n"
    for name, value in sorted((k, v) for k, v in values.items() if "ocp-" in k):
        text += f"{name}:{value}\n"
    text += f"/{account}{raw_path}"
    parsed = parse_qs(query, keep_blank_values=False)
    for name in sorted(parsed):
        if parsed[name][0]:
            text += f"\n{name}:{parsed[name][0]}"
    return text


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    method: str, raw_path: str, query: str, headers: Mapping[str, str], account: str, key: str
) -> bool:
    """True when `Authorization: SharedKey ACCOUNT:SIG` matches our account and key.

    The client signs before the transport settles Content-Length, so a request whose body
    length the client did not state is also accepted with the length left out.
    """
    auth = headers.get("authorization", "")
    scheme, _, credential = auth.partition(" ")
    if scheme != "SharedKey" or ":" not in credential:
        return False
    name, _, signature = credential.rpartition(":")
    if name != account:
        return False
    candidates = [dict(headers)]
    if method in ("GET", "HEAD", "DELETE") or headers.get("content-length") == "0":
        trimmed = {k: v for k, v in headers.items() if k != "content-length"}
        candidates.append(trimmed)
    for candidate in candidates:
        expected = sign(key, string_to_sign(method, raw_path, query, candidate, account))
        if hmac.compare_digest(expected, signature):
            return True
    return False
