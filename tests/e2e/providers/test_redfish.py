"""The Redfish repairer against a real Redfish service: sushy-tools' emulator as the BMC
(:mod:`kokpit.providers.repair.emulator`; TLS from its own CA, basic auth, fake systems).

No Kubernetes here but in the last test (credentials from a real Secret). The emulator is
shared by the session; each test takes systems of its own (``bmc_system``) and looks at what
the repair did through the emulator's Redfish API and its access log, not through sushy.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kokpit.providers.repair import RepairTarget
from kokpit.providers.repair.emulator import FakeSystem, LocalCA, RedfishEmulator
from kokpit.providers.repair.receiver import WebhookReceiver
from kokpit.providers.repair.redfish import (
    BMCAuthFailed,
    BMCCertificateInvalid,
    BMCCredentialsInvalid,
    BMCNotConfigured,
    BMCUnreachable,
    RedfishOptions,
    RedfishRepairer,
)
from kokpit.providers.repair.secrets import SecretReader, secret_reader
from kokpit.runtime import Client
from kokpit.runtime.resources import SECRETS

NAMESPACE = "fleet"
SECRET = "bmc-login"
OPTIONS = RedfishOptions(poll_interval=0.3, connect_attempts=2, connect_retry_delay=0.2)


def secrets_of(values: Mapping[str, Mapping[str, str]]) -> SecretReader:
    """Secrets of the Machine's namespace, by name (what the controller reads from the API
    server; the last test reads a real one)."""

    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        assert namespace == NAMESPACE, "a repairer reads Secrets of the Machine's namespace only"
        return values.get(name)

    return read


def target(bmc: Mapping[str, Any] | None) -> RepairTarget:
    spec: dict[str, Any] = {"clusterRef": {"name": "prod"}, "address": "10.0.0.7"}
    if bmc is not None:
        spec["bmc"] = dict(bmc)
    machine = {"metadata": {"name": "m-7", "namespace": NAMESPACE}, "spec": spec}
    return RepairTarget(NAMESPACE, machine, "node-7", "prod", "KernelDeadlock", "m-7-kernel")


@pytest.fixture
async def repairer(redfish_emulator: RedfishEmulator) -> AsyncIterator[RedfishRepairer]:
    r = RedfishRepairer(
        secrets=secrets_of({SECRET: redfish_emulator.secret_data()}), options=OPTIONS
    )
    try:
        yield r
    finally:
        await r.close()


def resets(emulator: RedfishEmulator, system: FakeSystem) -> list[int]:
    """The statuses of the reset actions the emulator answered for ``system``."""
    path = f"{system.path}/Actions/ComputerSystem.Reset"
    return [status for method, p, status in emulator.requests() if (method, p) == ("POST", path)]


def power_off(emulator: RedfishEmulator, system: FakeSystem) -> None:
    emulator.post(f"{system.path}/Actions/ComputerSystem.Reset", {"ResetType": "ForceOff"})
    deadline = time.monotonic() + 30
    while emulator.get(system.path)["PowerState"] != "Off":
        assert time.monotonic() < deadline, "the emulator never powered the system off"
        time.sleep(0.3)


async def test_power_cycle_resets_a_running_system_once_and_waits_for_it(
    repairer: RedfishRepairer,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert redfish_emulator.get(bmc_system.path)["PowerState"] == "On"
    done = await repairer.repair("PowerCycle", target(redfish_emulator.bmc(bmc_system, SECRET)))
    assert done == "PowerCycle: was On; ForceRestart; now On"
    assert resets(redfish_emulator, bmc_system) == [204]
    assert redfish_emulator.get(bmc_system.path)["PowerState"] == "On"
    # The caBundle was written for sushy to a private file, removed once done.
    assert os.listdir(tmp_path) == []


async def test_power_cycle_powers_on_a_system_that_is_off(
    repairer: RedfishRepairer, redfish_emulator: RedfishEmulator, bmc_system: FakeSystem
) -> None:
    power_off(redfish_emulator, bmc_system)
    before = len(resets(redfish_emulator, bmc_system))
    done = await repairer.repair("PowerCycle", target(redfish_emulator.bmc(bmc_system, SECRET)))
    assert done == "PowerCycle: was Off; On; now On"
    assert redfish_emulator.get(bmc_system.path)["PowerState"] == "On"
    assert len(resets(redfish_emulator, bmc_system)) == before + 1


async def test_reinstall_inserts_the_image_boots_once_from_cd_and_resets(
    repairer: RedfishRepairer,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
    tmp_path: Path,
) -> None:
    image = b"an installer image\n" * 64
    server = WebhookReceiver(tmp_path / "images", tls=False, files={"/os/install.iso": image})
    server.start()
    try:
        url = server.url("/os/install.iso")
        assert redfish_emulator.get(bmc_system.path)["Boot"]["BootSourceOverrideTarget"] == "Hdd"
        bmc = redfish_emulator.bmc(bmc_system, SECRET, reinstallImage=url)
        done = await repairer.repair("Reinstall", target(bmc))
        # The BMC fetched the image it was given, as one fetches an installer.
        assert [r.method for r in server.requests_to("/os/install.iso")] == ["GET"]
    finally:
        server.stop()
    assert done == (
        f"Reinstall: booting once from {url} (virtual media Cd): was On; ForceRestart; now On"
    )
    media = redfish_emulator.get(f"{bmc_system.path}/VirtualMedia/Cd")
    assert (media["Inserted"], media["Image"]) == (True, url)
    system = redfish_emulator.get(bmc_system.path)
    assert system["Boot"]["BootSourceOverrideTarget"] == "Cd"
    assert system["PowerState"] == "On"
    assert resets(redfish_emulator, bmc_system) == [204]


async def test_a_wrong_password_is_bmc_auth_failed_without_the_password(
    redfish_emulator: RedfishEmulator, bmc_system: FakeSystem
) -> None:
    wrong = "not-the-Passw0rd"
    secrets = secrets_of({SECRET: redfish_emulator.secret_data(password=wrong)})
    repairer = RedfishRepairer(secrets=secrets, options=OPTIONS)
    try:
        with pytest.raises(BMCAuthFailed) as failed:
            await repairer.repair("PowerCycle", target(redfish_emulator.bmc(bmc_system, SECRET)))
    finally:
        await repairer.close()
    message = str(failed.value)
    assert failed.value.reason == "BMCAuthFailed"
    assert f"refused the login of user '{redfish_emulator.username}'" in message
    assert f"Secret {SECRET}" in message
    assert wrong not in message
    assert redfish_emulator.password not in message
    assert resets(redfish_emulator, bmc_system) == []


async def test_a_certificate_of_another_ca_is_refused_unless_the_machine_skips_verification(
    repairer: RedfishRepairer, redfish_emulator: RedfishEmulator, bmc_system: FakeSystem
) -> None:
    other = LocalCA.create("some other CA").pem
    with pytest.raises(BMCCertificateInvalid) as refused:
        await repairer.repair(
            "PowerCycle", target(redfish_emulator.bmc(bmc_system, SECRET, caBundle=other))
        )
    assert refused.value.reason == "BMCCertificateInvalid"
    assert "not trusted (unable to get local issuer certificate)" in str(refused.value)
    assert "spec.bmc.caBundle" in str(refused.value)
    assert "spec.bmc.insecureSkipVerify" in str(refused.value)
    # Without a caBundle the system's CAs are used: they do not know the emulator's either.
    with pytest.raises(BMCCertificateInvalid):
        await repairer.repair(
            "PowerCycle", target(redfish_emulator.bmc(bmc_system, SECRET, caBundle=None))
        )
    assert resets(redfish_emulator, bmc_system) == []

    insecure = redfish_emulator.bmc(bmc_system, SECRET, caBundle=other, insecureSkipVerify=True)
    done = await repairer.repair("PowerCycle", target(insecure))
    assert done == "PowerCycle: was On; ForceRestart; now On"
    assert resets(redfish_emulator, bmc_system) == [204]


async def test_a_machine_without_a_bmc_is_not_configured(repairer: RedfishRepairer) -> None:
    with pytest.raises(BMCNotConfigured, match=r"Machine fleet/m-7 has no spec\.bmc"):
        await repairer.repair("PowerCycle", target(None))


async def test_reinstall_needs_an_image(
    repairer: RedfishRepairer, redfish_emulator: RedfishEmulator, bmc_system: FakeSystem
) -> None:
    with pytest.raises(BMCNotConfigured, match=r"no spec\.bmc\.reinstallImage"):
        await repairer.repair("Reinstall", target(redfish_emulator.bmc(bmc_system, SECRET)))
    assert resets(redfish_emulator, bmc_system) == []


async def test_a_bmc_that_does_not_listen_is_unreachable(
    repairer: RedfishRepairer, redfish_emulator: RedfishEmulator, bmc_system: FakeSystem
) -> None:
    bmc = redfish_emulator.bmc(bmc_system, SECRET, address="https://127.0.0.1:9")
    with pytest.raises(
        BMCUnreachable, match=r"127\.0\.0\.1:9 .* cannot be reached: connection refused"
    ):
        await repairer.repair("PowerCycle", target(bmc))


async def test_credentials_come_from_the_machines_secret(
    client: Client,
    namespace: str,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
) -> None:
    """The controller's reader (:func:`secret_reader`) on a real API server: the Secret of
    the Machine's namespace is used, one of the same name elsewhere is not."""
    data = redfish_emulator.secret_data()
    await client.create(
        SECRETS,
        {"metadata": {"name": SECRET, "namespace": namespace}, "type": "Opaque", "data": data},
    )
    repairer = RedfishRepairer(secrets=secret_reader(client), options=OPTIONS)
    try:
        machine = dict(target(redfish_emulator.bmc(bmc_system, SECRET)).machine)
        machine["metadata"] = {"name": "m-7", "namespace": namespace}
        in_namespace = RepairTarget(namespace, machine, "node-7", "prod", "Ready", "m-7-ready")
        done = await repairer.repair("PowerCycle", in_namespace)
        assert done == "PowerCycle: was On; ForceRestart; now On"
        elsewhere = RepairTarget("default", machine, "node-7", "prod", "Ready", "m-7-ready")
        with pytest.raises(BMCCredentialsInvalid, match=f"Secret {SECRET} not found"):
            await repairer.repair("PowerCycle", elsewhere)
    finally:
        await repairer.close()
