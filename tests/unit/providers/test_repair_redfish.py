"""The Redfish repairer's pure parts: reading spec.bmc and the Secret, choosing resets, and
turning sushy's errors into messages for a person (never with the password)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from sushy import exceptions as sushy_errors

from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.emulator import LocalCA
from kokpit.providers.repair.redfish import (
    BMCActionFailed,
    BMCAuthFailed,
    BMCCertificateInvalid,
    BMCConfigInvalid,
    BMCCredentials,
    BMCCredentialsInvalid,
    BMCEndpoint,
    BMCNotConfigured,
    BMCUnreachable,
    RedfishRepairer,
    plan_power_cycle,
    scrub,
    translate,
)

CA = LocalCA.create("unit test CA").pem
GOOD = {
    "address": "https://10.0.0.5:8000",
    "systemID": "/redfish/v1/Systems/1",
    "credentialsSecretRef": {"name": "bmc"},
}


def machine(bmc: Mapping[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {} if bmc is None else {"bmc": dict(bmc)}
    return {"metadata": {"name": "m-1", "namespace": "fleet"}, "spec": spec}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_endpoint_of_a_good_bmc() -> None:
    endpoint = BMCEndpoint.from_machine(
        machine({**GOOD, "address": "https://bmc-1.example.com/", "caBundle": CA})
    )
    assert endpoint.address == "https://bmc-1.example.com"
    assert endpoint.system_id == "/redfish/v1/Systems/1"
    assert endpoint.secret == "bmc"
    assert endpoint.machine == "fleet/m-1"
    assert endpoint.ca_bundle == CA
    assert not endpoint.insecure_skip_verify
    assert CA not in repr(endpoint)


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ({"address": "http://10.0.0.5"}, BMCConfigInvalid, "https base URL"),
        ({"address": "https://admin:pw@10.0.0.5"}, BMCConfigInvalid, "no user or password"),
        ({"address": "https://10.0.0.5/redfish/v1"}, BMCConfigInvalid, "path"),
        ({"address": "https://10.0.0.5?x=1"}, BMCConfigInvalid, "query"),
        ({"address": "https://10.0.0.5:port"}, BMCConfigInvalid, "https base URL"),
        ({"address": "file:///etc/passwd"}, BMCConfigInvalid, "https base URL"),
        ({"address": 7}, BMCConfigInvalid, "https base URL"),
        ({"systemID": "/redfish/v1/Systems/../../x"}, BMCConfigInvalid, "Redfish System path"),
        ({"systemID": "/etc/passwd"}, BMCConfigInvalid, "Redfish System path"),
        ({"systemID": "https://evil/redfish/v1/Systems/1"}, BMCConfigInvalid, "System path"),
        ({"credentialsSecretRef": {}}, BMCConfigInvalid, "credentialsSecretRef has no name"),
        ({"caBundle": "/etc/ssl/certs/ca.pem"}, BMCCertificateInvalid, "not PEM certificates"),
        ({"caBundle": "-----BEGIN CERTIFICATE-----\nxx"}, BMCCertificateInvalid, "not PEM"),
        ({"reinstallImage": "file:///dev/sda"}, BMCConfigInvalid, "http(s) URL"),
    ],
)
def test_endpoint_refuses_what_it_cannot_use(
    change: dict[str, Any], error: type[RepairError], says: str
) -> None:
    with pytest.raises(error) as refused:
        BMCEndpoint.from_machine(machine({**GOOD, **change}))
    assert says in str(refused.value)
    assert "Machine fleet/m-1" in str(refused.value)


def test_no_bmc_is_not_configured() -> None:
    with pytest.raises(BMCNotConfigured, match=r"has no spec\.bmc") as refused:
        BMCEndpoint.from_machine(machine(None))
    assert refused.value.reason == "BMCNotConfigured"


def test_insecure_skip_verify_only_when_true() -> None:
    for value, expected in ((True, True), (False, False), ("true", False), (1, False)):
        bmc = {**GOOD, "insecureSkipVerify": value}
        assert BMCEndpoint.from_machine(machine(bmc)).insecure_skip_verify is expected


def test_credentials_from_a_secret() -> None:
    credentials = BMCCredentials.from_secret_data(
        {"username": b64("root"), "password": b64("pä ss:word")}, secret="bmc"
    )
    assert (credentials.username, credentials.password) == ("root", "pä ss:word")
    assert "pä ss" not in repr(credentials)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (None, "Secret bmc not found"),
        ({"username": b64("root")}, "Secret bmc lacks password"),
        ({}, "Secret bmc lacks username, password"),
        ({"username": b64("root"), "password": "%%%"}, "password is not base64"),
        ({"username": b64("root"), "password": b64("s3cret\n")}, "password is empty or holds"),
        ({"username": b64("ro:ot"), "password": b64("s3cret")}, "username holds ':'"),
        ({"username": b64("root"), "password": base64.b64encode(b"\xff").decode()}, "UTF-8"),
    ],
)
def test_unusable_credentials(data: dict[str, str] | None, says: str) -> None:
    with pytest.raises(BMCCredentialsInvalid) as refused:
        BMCCredentials.from_secret_data(data, secret="bmc")
    assert says in str(refused.value)
    assert "s3cret" not in str(refused.value)


EMULATOR = frozenset(
    {"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn"}
)


@pytest.mark.parametrize(
    ("state", "allowed", "plan"),
    [
        ("On", EMULATOR, [("ForceRestart", "On")]),
        ("Off", EMULATOR, [("On", "On")]),
        ("PoweringOff", frozenset({"ForceOn", "ForceOff"}), [("ForceOn", "On")]),
        ("On", frozenset({"PowerCycle", "On", "ForceOff"}), [("PowerCycle", "On")]),
        ("On", frozenset({"On", "ForceOff"}), [("ForceOff", "Off"), ("On", "On")]),
        (
            "PoweringOn",
            frozenset({"ForceOn", "ForceOff"}),
            [("ForceOff", "Off"), ("ForceOn", "On")],
        ),
    ],
)
def test_power_cycle_plan(state: str, allowed: frozenset[str], plan: list[tuple[str, str]]) -> None:
    assert plan_power_cycle(state, allowed) == plan


@pytest.mark.parametrize(
    ("state", "allowed"),
    [("On", frozenset({"GracefulRestart", "On"})), ("Off", frozenset({"ForceOff"}))],
)
def test_no_forced_reset_no_plan(state: str, allowed: frozenset[str]) -> None:
    with pytest.raises(BMCActionFailed, match="allows"):
        plan_power_cycle(state, allowed)


CREDENTIALS = BMCCredentials("root", "hunter2-secret")
ENDPOINT = BMCEndpoint.from_machine(machine(GOOD))


def test_scrub_hides_the_password_and_a_basic_token() -> None:
    token = base64.b64encode(b"root:hunter2-secret").decode()
    text = scrub(f"echo: hunter2-secret Authorization: Basic {token}", CREDENTIALS)
    assert "hunter2-secret" not in text
    assert token not in text
    assert len(scrub("x" * 5000, CREDENTIALS)) <= 1025


class Response:
    """What sushy reads of a response to build an HTTPError."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


def _connection_error(cause: Exception) -> sushy_errors.ConnectionError:
    try:
        try:
            raise cause
        except Exception as e:  # as sushy does: the cause is only the context
            raise sushy_errors.ConnectionError(url="https://10.0.0.5:8000/", error=e)  # noqa: B904
    except sushy_errors.ConnectionError as e:
        return e


def test_translate_a_refused_login() -> None:
    body = {"error": {"message": "bad password hunter2-secret"}}
    error = translate(
        sushy_errors.AccessError("GET", "https://10.0.0.5:8000/x", Response(401, body)),
        ENDPOINT,
        CREDENTIALS,
    )
    assert isinstance(error, BMCAuthFailed)
    assert str(error) == (
        "BMC https://10.0.0.5:8000 of Machine fleet/m-1 refused the login of user 'root' "
        "(HTTP 401): check the username and password in Secret bmc"
    )
    forbidden = translate(
        sushy_errors.AccessError("POST", "https://10.0.0.5:8000/x", Response(403, body)),
        ENDPOINT,
        CREDENTIALS,
    )
    assert isinstance(forbidden, BMCAuthFailed)
    assert "lacks the privilege" in str(forbidden)


def test_translate_an_untrusted_certificate() -> None:
    cause = requests.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate "
        "in certificate chain (_ssl.c:1006)"
    )
    error = translate(_connection_error(cause), ENDPOINT, CREDENTIALS)
    assert isinstance(error, BMCCertificateInvalid)
    assert "(self-signed certificate in certificate chain)" in str(error)
    assert "spec.bmc.caBundle" in str(error)
    assert "spec.bmc.insecureSkipVerify" in str(error)


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (requests.exceptions.ConnectionError("[Errno 111] Connection refused"), "refused"),
        (requests.exceptions.ConnectTimeout("timed out"), "did not answer in time"),
        (requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] x"), "TLS handshake failed"),
    ],
)
def test_translate_no_answer(cause: Exception, says: str) -> None:
    error = translate(_connection_error(cause), ENDPOINT, CREDENTIALS)
    assert isinstance(error, BMCUnreachable)
    assert says in str(error)


def test_translate_an_error_status_scrubbed() -> None:
    body = {"error": {"message": "no such system; you sent hunter2-secret"}}
    error = translate(
        sushy_errors.ResourceNotFoundError("GET", "https://10.0.0.5:8000/x", Response(404, body)),
        ENDPOINT,
        CREDENTIALS,
    )
    assert isinstance(error, BMCActionFailed)
    assert "HTTP 404: no such system; you sent ***" in str(error)
    assert "is spec.bmc.systemID /redfish/v1/Systems/1 this BMC's System?" in str(error)


def test_translate_something_unexpected_by_its_type_only() -> None:
    error = translate(UnicodeEncodeError("latin-1", "hunter2", 0, 1, "x"), ENDPOINT, CREDENTIALS)
    assert isinstance(error, BMCActionFailed)
    assert str(error).endswith("unexpected UnicodeEncodeError from the Redfish client")
    assert "hunter2" not in str(error)


async def test_the_repairer_checks_before_reaching_the_bmc() -> None:
    """Nothing here has a BMC listening: each refusal comes before any connection."""
    read: list[tuple[str, str]] = []

    async def secrets(namespace: str, name: str) -> Mapping[str, Any] | None:
        read.append((namespace, name))
        return None

    repairer = RedfishRepairer(secrets=secrets)
    target = RepairTarget("fleet", machine(GOOD), "node-1", "prod", "Ready", "m-1-ready")
    try:
        with pytest.raises(BMCActionFailed, match="Reboot is not a BMC action"):
            await repairer.repair("Reboot", target)
        with pytest.raises(BMCNotConfigured, match=r"no spec\.bmc\.reinstallImage"):
            await repairer.repair("Reinstall", target)
        with pytest.raises(BMCCredentialsInvalid, match="Secret bmc not found"):
            await repairer.repair("PowerCycle", target)
    finally:
        await repairer.close()
    assert read == [("fleet", "bmc")]
