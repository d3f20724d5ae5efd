"""How repairers read the Secrets a Machine or a RemediationPolicy names.

A repairer is given a :data:`SecretReader` (the controller builds one from its client with
:func:`secret_reader`) instead of a client: it reads one Secret of the object's own namespace,
by the name the object gives, and nothing else. Values are decoded here with the same rules
for every repairer: present, base64, UTF-8 text without control characters. Errors name the
Secret and the key, never the content.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kokpit.runtime import Client, NotFound
from kokpit.runtime.resources import SECRETS

#: ``(namespace, name)`` → the Secret's ``data`` (base64 values as stored), or None when there
#: is no such Secret. Other API errors propagate.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


def secret_reader(client: Client) -> SecretReader:
    """A :data:`SecretReader` reading through ``client`` (the operator's: it needs ``get`` on
    Secrets in the namespaces it repairs)."""

    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            secret = await client.get(SECRETS, name, namespace=namespace)
        except NotFound:
            return None
        data: Mapping[str, Any] = secret.get("data") or {}
        return data

    return read


class SecretValueError(ValueError):
    """A key of a Secret is missing or unusable; the message names the Secret and the key."""


def text_values(data: Mapping[str, Any], keys: tuple[str, ...], *, secret: str) -> list[str]:
    """The values of ``keys`` in a Secret's ``data`` as text, or :class:`SecretValueError`
    naming the missing or bad ones (never their content)."""
    missing = [key for key in keys if not data.get(key)]
    if missing:
        raise SecretValueError(f"Secret {secret} lacks {', '.join(missing)}")
    values: list[str] = []
    for key in keys:
        try:
            text = base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, TypeError, ValueError):
            raise SecretValueError(f"Secret {secret}: {key} is not base64 of UTF-8 text") from None
        if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise SecretValueError(
                f"Secret {secret}: {key} is empty or holds a control character (a newline?)"
            )
        values.append(text)
    return values
