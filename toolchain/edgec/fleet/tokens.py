"""The collector's bearer token: generated on the first start, kept in a file only its owner can
read, compared in constant time.

Clients find it in ``$EDGEC_TOKEN``, in ``--token-file FILE``, or (on the server's own machine)
in the default token file.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from edgec.errors import EdgecError
from edgec.fleet import TOKEN_ENV, default_dir

TOKEN_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
MIN_LENGTH = 16


def load_or_create(path: Path) -> tuple[str, bool]:
    """The token stored at ``path``; a new one is generated (mode 0600) when there is none.

    Returns:
        (token, created): ``created`` is True only on the first start, when the token is shown.

    Raises:
        EdgecError: the file is readable by others, empty, or cannot be read or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgecError(f"cannot create '{path.parent}' for the token file: {exc.strerror or exc}") from exc
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        # O_EXCL: two servers starting at once cannot both write (and print) a token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read(path, server=True), False
    except OSError as exc:
        raise EdgecError(f"cannot create token file '{path}': {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token, True


def read(path: Path, server: bool = False) -> str:
    """The token in ``path``.

    Raises:
        EdgecError: missing, empty, too short, or (for the server) readable by group or others.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise EdgecError(f"token file '{path}' does not exist; 'edgec serve' writes it on its first start") from None
    except OSError as exc:
        raise EdgecError(f"cannot read token file '{path}': {exc.strerror or exc}") from exc
    if server and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EdgecError(f"token file '{path}' is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                         f"restrict it with: chmod 600 '{path}'")
    if len(text) < MIN_LENGTH or any(c.isspace() for c in text):
        raise EdgecError(f"token file '{path}' does not hold a token (expected one line of at least {MIN_LENGTH} "
                         "characters); delete it and restart 'edgec serve' to generate a new one")
    return text


def client_token(token_file: Path | None = None) -> str:
    """The token a client sends: ``--token-file``, else ``$EDGEC_TOKEN``, else the default file.

    Raises:
        EdgecError: none of them holds a token.
    """
    if token_file:
        return read(token_file)
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    default = default_dir() / "token"
    if default.exists():
        return read(default)
    raise EdgecError(f"no collector token: set {TOKEN_ENV} or pass --token-file FILE (the file 'edgec serve' "
                     f"wrote on its first start; on the server's machine by default '{default}')")


def matches(header: bytes | None, token: str) -> bool:
    """Whether an ``Authorization: Bearer TOKEN`` header carries ``token`` (constant-time compare)."""
    scheme, _, credential = (header or b"").partition(b" ")
    # The scheme is case-insensitive (RFC 9110); only the secret part needs a constant-time compare.
    return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), token.encode())
