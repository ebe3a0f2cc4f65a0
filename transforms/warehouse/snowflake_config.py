"""Where the Snowflake sink's connection settings come from.

The URL names the place, ``snowflake://[user@]account/database/schema`` with optional
``?warehouse=W&role=R``; credentials never come from the URL. They come from the environment:

- ``SNOWFLAKE_USER`` (or the URL's user part), and one of
- ``SNOWFLAKE_PASSWORD``;
- ``SNOWFLAKE_PRIVATE_KEY_FILE`` (key-pair auth; ``SNOWFLAKE_PRIVATE_KEY_FILE_PWD`` when the
  key is encrypted);
- ``SNOWFLAKE_AUTHENTICATOR`` (``externalbrowser``, or ``oauth`` /
  ``programmatic_access_token`` with ``SNOWFLAKE_TOKEN``);
- ``SNOWFLAKE_WAREHOUSE``, ``SNOWFLAKE_ROLE``: defaults for the URL's query parameters.

Or from the connector's own ``connections.toml`` (``~/.snowflake/``, or ``$SNOWFLAKE_HOME``):
``?connection=NAME`` in the URL, or ``SNOWFLAKE_DEFAULT_CONNECTION_NAME``, when
``SNOWFLAKE_USER`` is not set. The URL's account, database and schema still apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, ConfigDict, SecretStr

from transforms.warehouse.base import redact

USAGE = "snowflake://account/database/schema[?warehouse=W&role=R&connection=NAME]"
_QUERY_KEYS = ("warehouse", "role", "connection")
_TOKEN_AUTHENTICATORS = ("oauth", "programmatic_access_token")


class SnowflakeSettings(BaseModel):
    """What ``snowflake.connector.connect`` needs; secrets are ``SecretStr``."""

    model_config = ConfigDict(frozen=True)

    account: str
    database: str
    schema_name: str
    warehouse: str | None = None
    role: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    private_key_file: str | None = None
    private_key_file_pwd: SecretStr | None = None
    authenticator: str | None = None
    token: SecretStr | None = None
    connection_name: str | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connector, secrets revealed (pass them on, never log)."""
        plain = {
            "account": self.account,
            "database": self.database,
            "schema": self.schema_name,
            "warehouse": self.warehouse,
            "role": self.role,
            "user": self.user,
            "private_key_file": self.private_key_file,
            "authenticator": self.authenticator,
            "connection_name": self.connection_name,
        }
        secret = {
            "password": self.password,
            "private_key_file_pwd": self.private_key_file_pwd,
            "token": self.token,
        }
        kwargs = {k: v for k, v in plain.items() if v is not None}
        kwargs.update({k: v.get_secret_value() for k, v in secret.items() if v is not None})
        return kwargs


def settings_from_url(url: str, environ: Mapping[str, str]) -> SnowflakeSettings:
    """The settings for ``url``; raises ValueError naming the missing or wrong piece."""
    where = f"--warehouse {redact(url)!r}"
    parts = urlparse(url)
    if parts.password:
        raise ValueError(f"{where}: put the password in SNOWFLAKE_PASSWORD, not in the URL")
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or len(path) != 2:
        raise ValueError(f"{where}: expected {USAGE}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown parameters {unknown}; allowed: {list(_QUERY_KEYS)}")

    env = {k: v for k, v in environ.items() if k.startswith("SNOWFLAKE_") and v}
    place = SnowflakeSettings(
        account=parts.hostname,
        database=path[0],
        schema_name=path[1],
        warehouse=query.get("warehouse") or env.get("SNOWFLAKE_WAREHOUSE"),
        role=query.get("role") or env.get("SNOWFLAKE_ROLE"),
    )
    user = parts.username or env.get("SNOWFLAKE_USER")
    connection = query.get("connection") or env.get("SNOWFLAKE_DEFAULT_CONNECTION_NAME")
    if not user and connection:
        return place.model_copy(update={"connection_name": connection})
    if not user:
        raise ValueError(
            f"{where}: no Snowflake user: set SNOWFLAKE_USER (with SNOWFLAKE_PASSWORD or "
            "SNOWFLAKE_PRIVATE_KEY_FILE), or name a connections.toml entry with "
            "?connection=NAME or SNOWFLAKE_DEFAULT_CONNECTION_NAME"
        )
    return place.model_copy(update={"user": user, **_credentials(where, user, env)})


def _credentials(where: str, user: str, env: Mapping[str, str]) -> dict[str, Any]:
    password = env.get("SNOWFLAKE_PASSWORD")
    key_file = env.get("SNOWFLAKE_PRIVATE_KEY_FILE")
    authenticator = env.get("SNOWFLAKE_AUTHENTICATOR")
    token = env.get("SNOWFLAKE_TOKEN")
    if not (password or key_file or authenticator):
        raise ValueError(
            f"{where}: no credential for Snowflake user {user!r}: set SNOWFLAKE_PASSWORD, "
            "SNOWFLAKE_PRIVATE_KEY_FILE (key-pair auth) or SNOWFLAKE_AUTHENTICATOR "
            "(e.g. externalbrowser)"
        )
    if key_file and not Path(key_file).is_file():
        raise ValueError(f"{where}: SNOWFLAKE_PRIVATE_KEY_FILE={key_file!r} is not a file")
    if authenticator and authenticator.lower() in _TOKEN_AUTHENTICATORS and not token:
        raise ValueError(f"{where}: SNOWFLAKE_AUTHENTICATOR={authenticator} needs SNOWFLAKE_TOKEN")
    if key_file and not authenticator:
        authenticator = "SNOWFLAKE_JWT"
    key_pwd = env.get("SNOWFLAKE_PRIVATE_KEY_FILE_PWD")
    return {
        "password": SecretStr(password) if password and not key_file else None,
        "private_key_file": key_file,
        "private_key_file_pwd": SecretStr(key_pwd) if key_file and key_pwd else None,
        "authenticator": authenticator,
        "token": SecretStr(token) if token else None,
    }


def scrub(text: str, kwargs: Mapping[str, Any]) -> str:
    """``text`` with every secret of ``kwargs`` replaced by ``***``."""
    for key in ("password", "private_key_file_pwd", "token"):
        secret = kwargs.get(key)
        if isinstance(secret, bytes):
            secret = secret.decode(errors="replace")
        if secret:
            text = text.replace(str(secret), "***")
    return text
