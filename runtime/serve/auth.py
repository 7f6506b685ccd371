"""Bearer-token auth: where the token comes from, the loopback rule, and a constant-time comparison."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Optional

from .config import ServeConfig, ServeConfigError

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # load balancers and HEALTHCHECK probe these without a token
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def resolve_token(config: ServeConfig) -> Optional[str]:
    """The bearer token from --token-file (or $KRONEDGE_API_TOKEN_FILE, the Docker-secrets convention),
    else from $KRONEDGE_API_TOKEN; None if none is set.

    Also enforces the rule that a server reachable from other machines has a token: raises
    `ServeConfigError` before any model is loaded.
    """
    token = None
    token_file = config.token_file or os.environ.get(f"{config.token_env}_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ServeConfigError(f"cannot read the token file {token_file}: {exc}") from None
        if not token:
            raise ServeConfigError(f"token file {token_file} is empty")
    elif os.environ.get(config.token_env):
        token = os.environ[config.token_env].strip()
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ServeConfigError(f"the API token is shorter than {MIN_TOKEN_CHARS} characters; use e.g. "
                               "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if token is None and not is_loopback(config.host) and not config.allow_no_auth:
        raise ServeConfigError(f"refusing to listen on {config.host} without auth: set {config.token_env} or "
                               "--token-file, or pass --allow-no-auth if something in front of this server authenticates")
    return token


def token_matches(header: Optional[str], token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so response timing does not leak how much of a guess was right.
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))
