"""Users of a shared app (``atomvib serve --users FILE``): a name and the SHA-256 digest of a token each.

The users file has one user a line, ``NAME TOKEN`` or ``NAME sha256:HEX`` (the digest of the token, what
``atomvib serve --users FILE --add-user NAME`` writes), ``#`` comments and blank lines allowed::

    # atomvib serve --users users.txt
    alice  sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    bob    3b9f0c6e7d2a41f08c55e1a2b7d90c1e

The app keeps only digests in memory, never writes a token anywhere (nor a digest into the store: a job records
its owner's *name*), and compares a presented token's digest with every user's digest in constant time
(:func:`hmac.compare_digest`, no early exit), so the time a request takes tells nothing about which user or how
much of a token matched. Tokens must be random and at least :data:`MIN_TOKEN_CHARS` characters long: an unsalted
digest is safe for random tokens, not for passwords.

The browser keeps a cookie instead of the token: an HMAC of the user's digest under a secret of the data
directory (``DATA/.web_secret``, made once, mode 600), so the cookie is worthless without that secret, and
changing a user's token in the file invalidates the user's cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

#: shortest token accepted (random tokens: `atomvib serve --add-user` makes 32 hex characters)
MIN_TOKEN_CHARS = 16
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
SECRET_FILE = ".web_secret"


def token_digest(token: str) -> bytes:
    """SHA-256 digest (32 bytes) of a token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def digest_line(name: str, token: str) -> str:
    """The users-file line of ``name`` holding the digest of ``token`` (``NAME sha256:HEX``)."""
    return f"{name} sha256:{token_digest(token).hex()}"


@dataclass(frozen=True, eq=False)
class Users:
    """Names and token digests; :meth:`who` and :meth:`who_by_cookie` find the user of a request.

    Parameters
    ----------
    digests : dict of str to bytes
        User name → SHA-256 digest of the user's token.
    secret : bytes
        Key of the cookie HMAC (see the module docstring).
    """

    digests: dict
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self):
        cookies = {n: hmac.new(self.secret, b"atomvib-web-user-cookie:" + d, hashlib.sha256).hexdigest()
                   for n, d in self.digests.items()}
        object.__setattr__(self, "_cookies", cookies)

    @property
    def names(self) -> list[str]:
        return sorted(self.digests)

    @staticmethod
    def _match(value: bytes, table: dict) -> str | None:
        """The name whose entry equals ``value``; every entry is compared (constant time, no early exit)."""
        found = None
        for name, want in table.items():
            if hmac.compare_digest(value, want):
                found = name
        return found

    def who(self, token: str | None) -> str | None:
        """The user whose token this is, or None."""
        if not token:
            return None
        return self._match(token_digest(token), self.digests)

    def cookie_for(self, name: str) -> str:
        """The cookie value that identifies ``name`` (HMAC of the user's digest)."""
        return self._cookies[name]

    def who_by_cookie(self, value: str | None) -> str | None:
        """The user of a cookie value, or None."""
        if not value or len(value) != 64:
            return None
        return self._match(value.encode("ascii", "replace"), {n: c.encode() for n, c in self._cookies.items()})


def read_users(path, secret: bytes | None = None) -> Users:
    """The users of a users file (see the module docstring); InputError, in one line, for anything wrong in it.

    Parameters
    ----------
    path : path
        The users file.
    secret : bytes, optional
        Cookie key (default: a new random one, so cookies last as long as the process).
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the users file {path}: {exc.strerror if isinstance(exc, OSError) else exc}",
                         fix="give a text file of 'NAME TOKEN' or 'NAME sha256:HEX' lines") from None
    digests: dict[str, bytes] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}, line {n}"
        if len(parts) != 2:
            raise InputError(f"{where}: expected 'NAME TOKEN' or 'NAME sha256:HEX', got {len(parts)} fields",
                             fix="one user a line: a name and a token (or its sha256 digest), separated by spaces")
        name, cred = parts
        if not NAME_RE.match(name):
            raise InputError(f"{where}: user name '{name[:40]}' is not allowed",
                             fix="use letters, digits and . _ - + @ (at most 64 characters, starting with a letter "
                                 "or digit)")
        if name in digests:
            raise InputError(f"{where}: user '{name}' is listed twice", fix="keep one line per user")
        m = DIGEST_RE.match(cred)
        if m:
            d = bytes.fromhex(m.group(1))
        elif cred.lower().startswith("sha256:"):
            raise InputError(f"{where}: the digest of '{name}' is not 64 lowercase hex digits",
                             fix="write it as atomvib serve --add-user does: sha256:<64 hex digits>")
        elif len(cred) < MIN_TOKEN_CHARS:
            raise InputError(f"{where}: the token of '{name}' has {len(cred)} characters, fewer than "
                             f"{MIN_TOKEN_CHARS}", fix="use a random token: atomvib serve --users FILE --add-user NAME")
        else:
            d = token_digest(cred)
        if d in digests.values():
            raise InputError(f"{where}: user '{name}' has the same token as another user",
                             fix="give every user a token of their own")
        digests[name] = d
    if not digests:
        raise InputError(f"the users file {path} lists no user",
                         fix="add 'NAME TOKEN' lines, e.g. with atomvib serve --users FILE --add-user NAME")
    return Users(digests, secret if secret is not None else secrets.token_bytes(32))


def add_user(path, name: str) -> str:
    """Append ``name`` with a new random token (its digest only) to the users file; returns the token.

    The file is created with mode 600 when it does not exist. InputError for a bad or existing name.
    """
    path = Path(path).expanduser()
    if not NAME_RE.match(name or ""):
        raise InputError(f"user name '{str(name)[:40]}' is not allowed",
                         fix="use letters, digits and . _ - + @ (at most 64 characters)")
    before = ""
    if path.exists():
        try:
            existing = read_users(path).digests
        except InputError as exc:
            if "lists no user" not in exc.problem:
                raise
            existing = {}
        if name in existing:
            raise InputError(f"user '{name}' is already in {path}",
                             fix="remove the line first to give the user a new token")
        before = path.read_text(encoding="utf-8")
    token = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(("\n" if before and not before.endswith("\n") else "") + digest_line(name, token) + "\n")
    return token


def data_secret(data_dir) -> bytes:
    """The cookie key of a data directory (``DATA/.web_secret``, 32 random bytes, made once with mode 600)."""
    p = Path(data_dir) / SECRET_FILE
    try:
        key = p.read_bytes()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    tmp = p.with_name(f"{SECRET_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:
        os.link(tmp, p)  # first writer wins: two app processes on one data directory share the key
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not p.exists():
            tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
    return p.read_bytes()
