"""API tokens for `dupecheck serve`: shown once, stored only as SHA-256, revocable.

The file lives in dupecheck's config dir (platformdirs; `--config DIR` or
DUPECHECK_CONFIG overrides), mode 0600 in a 0700 folder. A running server re-reads
it whenever it changes, so a revoked token stops working at once. Every change (create,
revoke, a server's last-used time) reads and writes the file under one lock (`flock` on
a file beside it), so a change made by another process is never written over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DupecheckError, UsageError

TOKENS_FILE = "tokens.json"
LOCK_FILE = ".tokens.lock"
TOKEN_PREFIX = "dc_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LAST_USED_EVERY_S = 60  # last-used times are written at most this often per token


def default_config_dir() -> Path:
    env = os.environ.get("DUPECHECK_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("dupecheck"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str
    last_used: str | None


class TokenError(DupecheckError):
    """The token file cannot be read or written."""


class TokenStore:
    def __init__(self, config_dir: Path | None = None) -> None:
        self.dir = Path(config_dir) if config_dir is not None else default_config_dir()
        self.path = self.dir / TOKENS_FILE
        self._cache: tuple[int, dict[str, dict[str, str | None]]] | None = None

    # -- the file ---------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, str | None]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        if self._cache is not None and self._cache[0] == stat.st_mtime_ns:
            return self._cache[1]
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            tokens = doc["tokens"]
            if not isinstance(tokens, dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("sha256"), str)
                    for v in tokens.values()):
                raise ValueError("malformed")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"unreadable ({exc}); delete it and create tokens anew",
                             self.path) from exc
        self._cache = (stat.st_mtime_ns, tokens)
        return tokens

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, dict[str, str | None]]]:
        """The tokens as the file holds them now, under the lock; what the block leaves in
        the dict is saved when it changed. Read afresh inside the lock (never from the
        cache), so a concurrent revoke is seen, not written back."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._private_folder()
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None
            tokens = dict(self._load())
            before = dict(tokens)
            yield tokens
            if tokens != before:
                self._save(tokens)
        finally:
            os.close(fd)  # releases the lock

    def _save(self, tokens: dict[str, dict[str, str | None]]) -> None:
        tmp = self.path.with_name(f".{TOKENS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "tokens": tokens}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._cache = None

    def _private_folder(self) -> None:
        """The folder that holds the token file is the user's alone (0700), also when it
        existed before dupecheck (a config folder made by hand or by another tool); one
        the user does not own is left as it is."""
        folder = self.dir.stat()
        mode = folder.st_mode & 0o777
        if folder.st_uid == os.getuid() and mode & 0o077:
            os.chmod(self.dir, mode & 0o700)

    # -- what the commands do -----------------------------------------------------------

    def create(self, name: str) -> str:
        """A new token for `name`, returned once and never stored in the clear."""
        if not NAME_PATTERN.match(name):
            raise UsageError(f"token name {name!r}: use letters, digits, '.', '_' or '-' "
                             f"(at most 64)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._changing() as tokens:
            if name in tokens:
                raise UsageError(f"a token named {name!r} exists; revoke it first or pick "
                                 f"another name")
            tokens[name] = {"sha256": _digest(token), "created": _now(), "last_used": None}
        return token

    def list(self) -> list[TokenInfo]:
        return [TokenInfo(name, str(v.get("created") or ""), v.get("last_used"))
                for name, v in sorted(self._load().items())]

    def revoke(self, name: str) -> None:
        with self._changing() as tokens:
            if name not in tokens:
                raise UsageError(f"no token named {name!r}")
            del tokens[name]

    def __bool__(self) -> bool:
        return bool(self._load())

    def verify(self, token: str) -> str | None:
        """The token's name, or None. Every stored hash is compared (constant time)."""
        digest = _digest(token)
        found = None
        tokens = self._load()
        for name, entry in tokens.items():
            if hmac.compare_digest(digest, str(entry["sha256"])) and found is None:
                found = name
        if found is not None:
            self._touch(found)
        return found

    def still_valid(self, name: str, token: str) -> bool:
        """Whether `token` is still `name`'s (not revoked, not replaced since it was
        verified): work that waited its turn asks again before it runs."""
        entry = self._load().get(name)
        return entry is not None and hmac.compare_digest(_digest(token), str(entry["sha256"]))

    def _touch(self, name: str) -> None:
        if not self._stale(self._load().get(name, {}).get("last_used")):
            return  # the common case: no lock, no write
        try:
            with self._changing() as tokens:
                entry = tokens.get(name)
                if entry is not None and self._stale(entry.get("last_used")):  # revoked: gone
                    tokens[name] = {**entry, "last_used": _now()}
        except (OSError, TokenError):
            pass  # a last-used time is not worth failing a request

    @staticmethod
    def _stale(last: str | None) -> bool:
        if not last:
            return True
        try:
            seen = datetime.datetime.strptime(str(last), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return True
        now = datetime.datetime.now(datetime.timezone.utc)
        return (now - seen).total_seconds() >= LAST_USED_EVERY_S
