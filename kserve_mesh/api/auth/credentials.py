"""The auth file: roles, principals, and the tokens and certificate identities that name them.

See the package docstring (``kserve_mesh.api.auth``) for the file's shape. Tokens are kept as
their SHA-256 digests only.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kserve_mesh.core.errors import InvalidArgument


class Role(enum.IntEnum):
    INFER = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Credentials:
    """The parsed auth file: token digests and certificate subjects, each to a principal."""

    tokens: Mapping[bytes, Principal]
    identities: Mapping[str, Principal]

    @classmethod
    def parse(cls, text: str, where: str = "auth file") -> Credentials:
        try:
            doc = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"{where} is not valid YAML/JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{where} must be a mapping with 'tokens' and/or 'identities'")
        unknown = set(doc) - {"tokens", "identities"}
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                                  "(allowed: tokens, identities)")
        tokens: dict[bytes, Principal] = {}
        for i, entry in enumerate(_entries(doc, "tokens", where)):
            what = f"{where}: tokens[{i}]"
            _only(entry, {"name", "role", "token", "sha256"}, what)
            principal = Principal(_name(entry, what, f"token-{i}"), _role(entry, what))
            if ("token" in entry) == ("sha256" in entry):
                raise InvalidArgument(f"{what} needs exactly one of 'token' or 'sha256'")
            if "token" in entry:
                token = entry["token"]
                if not isinstance(token, str) or len(token) < 16 or not token.isprintable() or " " in token:
                    raise InvalidArgument(f"{what}: 'token' must be a printable string of at least 16 "
                                          "characters without spaces")
                digest = token_digest(token)
            else:
                value = entry["sha256"]
                if not isinstance(value, str) or not _HEX64.match(value):
                    raise InvalidArgument(f"{what}: 'sha256' must be 64 hex digits")
                digest = bytes.fromhex(value)
            if digest in tokens:
                raise InvalidArgument(f"{what}: the same token is listed twice")
            tokens[digest] = principal
        identities: dict[str, Principal] = {}
        for i, entry in enumerate(_entries(doc, "identities", where)):
            what = f"{where}: identities[{i}]"
            _only(entry, {"name", "role", "subject"}, what)
            subject = entry.get("subject")
            if not isinstance(subject, str) or not subject:
                raise InvalidArgument(f"{what}: 'subject' (a certificate CN or SAN) is required")
            identities[subject] = Principal(_name(entry, what, subject), _role(entry, what))
        return cls(tokens, identities)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"cannot read the auth file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InvalidArgument(f"the auth file {path} is not UTF-8 text") from None
        return cls.parse(text, f"auth file {path}")

    def __bool__(self) -> bool:
        return bool(self.tokens or self.identities)


def _entries(doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidArgument(f"{where}: '{key}' must be a list of mappings")
    return value


def _only(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = set(entry) - allowed
    if extra:
        raise InvalidArgument(f"{what}: unknown key(s) {', '.join(sorted(map(str, extra)))} "
                              f"(allowed: {', '.join(sorted(allowed))})")


def _name(entry: Mapping[str, Any], what: str, default: str) -> str:
    name = entry.get("name", default)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what}: 'name' must be a non-empty string")
    return name


def _role(entry: Mapping[str, Any], what: str) -> Role:
    role = entry.get("role")
    if isinstance(role, str) and role.upper() in Role.__members__:
        return Role[role.upper()]
    raise InvalidArgument(f"{what}: 'role' must be admin or infer, got {role!r}")
