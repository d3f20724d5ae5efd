"""The SSH Secret is hostile input: whatever it holds becomes a clear InvalidSecret, naming the
key and never quoting the content."""

from __future__ import annotations

import base64

import pytest

from kokpit.providers.machine import Credentials, HostError, InvalidCredentials
from kokpit.providers.machine.ssh import lock_name

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n"
KNOWN_HOSTS = b"[10.0.0.1]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret(**overrides: str) -> dict[str, str]:
    data = {"username": b64(b"root"), "privateKey": b64(KEY), "knownHosts": b64(KNOWN_HOSTS)}
    return {**data, **overrides}


def test_a_good_secret_gives_the_credentials() -> None:
    credentials = Credentials.from_secret_data(secret(username=b64(b"ec2-user")), secret="ns/s")
    assert credentials == Credentials("ec2-user", KEY, KNOWN_HOSTS)
    assert "PRIVATE" not in repr(credentials)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": b64(b"root")}, "SSH Secret ns/s lacks privateKey, knownHosts"),
        (secret(username=""), "SSH Secret ns/s lacks username"),
        (secret(privateKey="not base64 at all!"), "SSH Secret ns/s: privateKey is not base64"),
        (secret(username=b64(b"r\xffoot")), "SSH Secret ns/s: username is not UTF-8 text"),
        (secret(knownHosts=b64(b"\xfe" + KNOWN_HOSTS)), "knownHosts is not UTF-8 text"),
        (secret(username=b64(b"root\nProxyCommand x")), "username is not a user name"),
        (secret(username=b64(b"-oProxyCommand=touch")), "username is not a user name"),
        (secret(username=b64(b"r\x00t")), "username is not a user name"),
        (secret(username=b64(b"a" * 65)), "username is not a user name"),
    ],
)
def test_a_bad_secret_is_invalid_without_quoting_it(data: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidCredentials) as raised:
        Credentials.from_secret_data(data, secret="ns/s")
    assert message in str(raised.value)
    assert isinstance(raised.value, HostError)
    assert raised.value.reason == "InvalidSecret"
    for value in data.values():
        assert not value or value not in str(raised.value)
    for fragment in ("ProxyCommand", "secret", "\\x", "root"):
        assert fragment not in str(raised.value)


@pytest.mark.parametrize(
    ("package", "name"),
    [("containerd", "containerd"), ("kube-let.1", "kube-let.1"), ("demo", "demo")],
)
def test_a_package_names_its_lock(package: str, name: str) -> None:
    assert lock_name(package) == name


@pytest.mark.parametrize("package", ["../../etc/passwd", "-rf", ".hidden", "A", "a b", "a" * 64])
def test_a_name_that_is_not_a_package_name_never_names_a_file(package: str) -> None:
    name = lock_name(package)
    assert name.startswith("sha256-")
    assert len(name) == 7 + 64
    assert lock_name(package) == name
