"""Who is calling and what they may do: bearer tokens mapped to an actor and a role, and each role's
permissions as glob patterns over permission names (configuration, not code).

Permission names say what is moved and, where a state is involved, from where to where, so access
can depend on state (the seed's state-based access control):

    register/{type}                       start a lifecycle
    approve/{type}, reject/{type}         decide a resource's approval
    requirement/{type}/{name}             update a requirement
    command/{type}/{command}/{state}      send retry, archive, ... to a resource in {state}
    transition/{type}/{from}/{to}         move an arrow by hand
    bulk                                  act on many resources at once (each still checked)
    webhooks                              manage webhook subscriptions

Config file (YAML or JSON), all keys optional:

    anonymous_read: true
    tokens:
      - {actor: alice, role: approver, token_sha256: "<hex sha256 of the token>"}
      - {actor: ci, role: operator, token: "plain-token"}
    roles:                       # replaces a role's default patterns
      operator: ["register/*", "command/*/retry/*", "transition/*/*/archived"]

Tokens are compared by their SHA-256, so a config file need not hold them in plain text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator

ACTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,63}$"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


# Operators run resources (register, commands, recovery arrows); approvers decide approvals; neither
# may do the other's job, so an operator's token cannot approve.
DEFAULT_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.VIEWER: (),
    Role.OPERATOR: (
        "register/*",
        "command/*",
        "requirement/*",
        "transition/*/failed/registered",
        "transition/*/failed_validation/registered",
        "transition/*/active/inactive",
        "transition/*/inactive/active",
        "transition/*/*/archived",
        "bulk",
    ),
    Role.APPROVER: ("approve/*", "reject/*", "requirement/*", "bulk"),
    Role.ADMIN: ("*",),
}


class AuthConfigError(ValueError):
    """The access configuration cannot be used; the message names the file and the problem."""


class TokenEntry(BaseModel):
    actor: str = Field(pattern=ACTOR_PATTERN)
    role: Role
    token: SecretStr | None = None
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"token of {self.actor}: give exactly one of token, token_sha256")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError(f"token of {self.actor}: at least 16 characters")
        return self

    def digest(self) -> str:
        if self.token_sha256 is not None:
            return self.token_sha256.lower()
        assert self.token is not None
        return token_digest(self.token.get_secret_value())


class AccessConfig(BaseModel):
    anonymous_read: bool = True
    tokens: list[TokenEntry] = Field(default_factory=list)
    roles: dict[Role, list[str]] = Field(default_factory=dict)


class Principal(BaseModel):
    actor: str
    role: Role


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccessPolicy:
    def __init__(self, config: AccessConfig) -> None:
        self.anonymous_read = config.anonymous_read
        self.permissions: dict[Role, tuple[str, ...]] = {
            role: tuple(config.roles.get(role, DEFAULT_PERMISSIONS[role])) for role in Role
        }
        self._by_digest: dict[str, Principal] = {}
        for entry in config.tokens:
            digest = entry.digest()
            if digest in self._by_digest:
                raise AuthConfigError(f"two actors share one token ({entry.actor})")
            self._by_digest[digest] = Principal(actor=entry.actor, role=entry.role)

    def authenticate(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def allows(self, principal: Principal | None, permission: str) -> bool:
        if principal is None:
            return False
        return any(fnmatchcase(permission, p) for p in self.permissions[principal.role])


def parse_token_list(text: str) -> list[TokenEntry]:
    """`actor:role:token,actor:role:token` (the RSM_API_TOKENS form)."""
    entries: list[TokenEntry] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        actor, _, rest = item.partition(":")
        role, _, token = rest.partition(":")
        if not (actor and role and token):
            raise AuthConfigError(
                f"RSM_API_TOKENS entry {actor or item[:8]!r}: use actor:role:token"
            )
        try:
            entries.append(TokenEntry(actor=actor, role=Role(role), token=SecretStr(token)))
        except (ValueError, ValidationError) as exc:
            raise AuthConfigError(f"RSM_API_TOKENS entry for {actor!r}: {exc}") from None
    return entries


def load_access(
    path: Path | None, tokens: str = "", anonymous_read: bool | None = None
) -> AccessPolicy:
    config = AccessConfig()
    if path is not None:
        try:
            raw = path.read_text()
            data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
            config = AccessConfig.model_validate(data or {})
        except OSError as exc:
            raise AuthConfigError(f"cannot read access file {path}: {exc}") from None
        except (ValueError, ValidationError, yaml.YAMLError) as exc:
            raise AuthConfigError(f"access file {path}: {exc}") from None
    config.tokens.extend(parse_token_list(tokens))
    if anonymous_read is not None:
        config.anonymous_read = anonymous_read
    return AccessPolicy(config)
