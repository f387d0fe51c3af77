"""Access rules of the web app: the token, the session cookie and the names a request may use.

* No token configured: every request is allowed (the app binds 127.0.0.1 by default; binding another address
  without a token is refused by :func:`check_bind`).
* A token configured: ``/api/*`` and the live stream need it, as ``Authorization: Bearer <token>``,
  ``X-H1-Token: <token>`` or the session cookie the login form sets (an HMAC of the token, HttpOnly,
  SameSite=Strict, so another site cannot ride it; the raw token never sits in the browser).
* Names from users (datasets, models) must match :data:`NAME_RE` and, for data, resolve under the data root.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from pathlib import Path

COOKIE = "h1_web_session"
# dataset names are "<root>/<folder>" paths relative to a data root: safe segments only, no "." or ".."
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"h1_training web session", hashlib.sha256).hexdigest()


def token_ok(token: str, *, bearer: str | None, header: str | None, cookie: str | None) -> bool:
    """True when no token is configured, or one of the credentials carries it."""
    if not token:
        return True
    for given in (bearer, header):
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def bearer_of(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str, allow_open_lan: bool = False) -> str | None:
    """Why the app must not serve on ``host`` (None: it may)."""
    if is_loopback(host) or token or allow_open_lan:
        return None
    return (f"refusing to serve on {host} without a token: anyone on that network could start training and "
            "deploy models. Set the token parameter (or H1_WEB_TOKEN), or allow_open_lan:=true on purpose.")


def check_dataset_name(name: str) -> str | None:
    """Why ``name`` is not an acceptable dataset name (None: it is)."""
    if not name:
        return "dataset name is empty"
    if len(name) > 512:
        return "dataset name is longer than 512 characters"
    if name.startswith("/") or "\\" in name or "\x00" in name:
        return f"dataset name {name!r} must be a relative name such as h1_data/training_session_epoch1"
    for seg in name.split("/"):
        if seg in ("", ".", "..") or not SEGMENT_RE.match(seg):
            return (f"dataset name {name!r} has a bad part {seg!r}: letters, digits, '_', '-', '.' only, "
                    "no empty, '.' or '..' parts")
    return None


def check_model_id(model_id: str) -> str | None:
    if not MODEL_RE.match(model_id or ""):
        return (f"model id {model_id!r}: 1-128 characters, letters, digits, '_', '-', '.', ':' only, "
                "starting with a letter, digit or '_'")
    return None


def under_root(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents
