"""BMC repairs over Redfish: PowerCycle and Reinstall, through the ``sushy`` client.

The Machine's ``spec.bmc`` names the BMC (an https base URL), the Redfish System of the host,
the Secret holding the BMC login (keys ``username`` and ``password``, in the Machine's
namespace) and how to trust the BMC's certificate.

Invariants:

* ``spec.bmc`` is hostile input, validated by the API server and checked again here
  (:meth:`BMCEndpoint.from_machine`): an https URL without credentials, path, query or
  fragment; a System path of the one allowed shape. Nothing in it ever names a local file:
  ``caBundle`` is PEM *content*, written by us to a private temporary file (sushy wants a
  path) that is removed when the action ends.
* TLS is verified against ``caBundle`` (or the system's CAs when unset) unless the Machine says
  ``insecureSkipVerify``; a certificate that does not verify is :class:`BMCCertificateInvalid`,
  never silently accepted.
* Messages are for a person and end up in the Remediation and its Events: they name the
  Machine, the BMC and the Secret, never the password (anything the BMC says back is scrubbed
  of it, in case it echoes), and an unexpected exception is reported by its type only.
* sushy is synchronous (requests): each action runs in a worker thread of a pool of our own
  (:attr:`RedfishOptions.workers`, so BMCs never starve the event loop's default executor),
  every request bounded by ``connect_timeout``/``read_timeout``, the whole action by
  ``action_timeout``. When the caller gives up (timeout, cancellation) the thread stops before
  its next step: a reset is never sent after the action was reported over.
* Retries only where nothing has changed yet: logging in and finding the System are tried
  :attr:`RedfishOptions.connect_attempts` times when the BMC cannot be reached; a request that
  changes the host (a reset, inserting media, the boot override) is sent once (sushy's own
  transport retries are turned off), since the BMC may have acted on one whose answer was
  lost.
* An action returns once it is *done*: PowerCycle when the BMC reports the system On again
  after the reset; Reinstall when the image is inserted, the one-time boot override to the
  CD is set and the system is On again after the reset. Whether the node recovered is the
  controller's check.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
import sushy
import urllib3
from sushy import exceptions as sushy_errors

from kokpit.api.v1alpha1.remediationpolicy import BMC_ACTIONS
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.secrets import SecretReader, SecretValueError, text_values

log = logging.getLogger(__name__)

#: The keys of a BMC credentials Secret, both required.
SECRET_KEYS = ("username", "password")
#: The shape of ``spec.bmc.systemID`` (the API server's pattern).
SYSTEM_ID = re.compile(r"/redfish/v1/Systems/[A-Za-z0-9][-A-Za-z0-9_.]*")
#: How much of what a BMC says reaches a message.
MESSAGE_MAX = 1024


class BMCError(RepairError):
    """A BMC repair could not be done."""

    reason = "BMCError"


class BMCNotConfigured(BMCError):
    """The Machine has no ``spec.bmc`` (or no ``reinstallImage`` for Reinstall)."""

    reason = "BMCNotConfigured"


class BMCConfigInvalid(BMCNotConfigured):
    """``spec.bmc`` holds something unusable (an address that is not an https base URL, ...)."""

    reason = "BMCConfigInvalid"


class BMCCredentialsInvalid(BMCError):
    """The credentials Secret is missing, or lacks ``username``/``password``, or holds values
    that are not text."""

    reason = "BMCCredentialsInvalid"


class BMCAuthFailed(BMCError):
    """The BMC refused the login (HTTP 401) or the account's privilege (HTTP 403)."""

    reason = "BMCAuthFailed"


class BMCCertificateInvalid(BMCError):
    """The BMC's TLS certificate did not verify (or ``caBundle`` is not PEM certificates)."""

    reason = "BMCCertificateInvalid"


class BMCUnreachable(BMCError):
    """No answer from the BMC: refused, no route, timed out, TLS handshake failed."""

    reason = "BMCUnreachable"


class BMCActionFailed(BMCError):
    """The BMC answered but the action could not be done (an error status, no virtual media,
    the system never came back On, ...)."""

    reason = "BMCActionFailed"


@dataclass(frozen=True)
class RedfishOptions:
    #: Seconds to open a connection to the BMC (TCP and TLS).
    connect_timeout: float = 10.0
    #: Seconds to wait for one answer of the BMC (some BMCs are slow to answer an action).
    read_timeout: float = 60.0
    #: Seconds for a whole action, the wait for the power state included.
    action_timeout: float = 600.0
    #: Seconds the system has to reach the power state a reset asks for.
    power_timeout: float = 300.0
    #: Seconds between two looks at the power state.
    poll_interval: float = 2.0
    #: Tries at logging in and finding the System while the BMC cannot be reached.
    connect_attempts: int = 3
    #: Seconds between those tries.
    connect_retry_delay: float = 2.0
    #: Actions running at once (worker threads); more wait for a free one.
    workers: int = 16


@dataclass(frozen=True)
class BMCEndpoint:
    """A Machine's ``spec.bmc``, checked."""

    machine: str
    #: ``https://host[:port]``, nothing more.
    address: str
    system_id: str
    secret: str
    insecure_skip_verify: bool = False
    ca_bundle: str | None = field(default=None, repr=False)
    reinstall_image: str | None = None

    @classmethod
    def from_machine(cls, machine: Mapping[str, Any]) -> BMCEndpoint:
        meta = machine.get("metadata") or {}
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        bmc = (machine.get("spec") or {}).get("bmc")
        if not isinstance(bmc, Mapping):
            raise BMCNotConfigured(f"Machine {name} has no spec.bmc: no BMC to repair it through")
        address = _base_url(bmc.get("address"), name)
        system_id = bmc.get("systemID")
        if not isinstance(system_id, str) or not SYSTEM_ID.fullmatch(system_id):
            raise BMCConfigInvalid(
                f"Machine {name}: spec.bmc.systemID must be a Redfish System path such as "
                "/redfish/v1/Systems/1"
            )
        secret = (bmc.get("credentialsSecretRef") or {}).get("name")
        if not isinstance(secret, str) or not secret:
            raise BMCConfigInvalid(f"Machine {name}: spec.bmc.credentialsSecretRef has no name")
        ca_bundle = bmc.get("caBundle") or None
        if ca_bundle is not None:
            _check_ca_bundle(ca_bundle, name)
        image = bmc.get("reinstallImage") or None
        if image is not None and (
            not isinstance(image, str) or urllib.parse.urlsplit(image).scheme not in _IMAGE_SCHEMES
        ):
            raise BMCConfigInvalid(
                f"Machine {name}: spec.bmc.reinstallImage must be an http(s) URL"
            )
        return cls(
            machine=name,
            address=address,
            system_id=system_id,
            secret=secret,
            insecure_skip_verify=bmc.get("insecureSkipVerify") is True,
            ca_bundle=ca_bundle,
            reinstall_image=image,
        )


_IMAGE_SCHEMES = ("http", "https")


def _base_url(value: Any, machine: str) -> str:
    problem = (
        f"Machine {machine}: spec.bmc.address must be the BMC's https base URL, such as "
        "https://10.0.0.5:8000 (no user or password, path, query or fragment)"
    )
    if not isinstance(value, str):
        raise BMCConfigInvalid(problem)
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise BMCConfigInvalid(problem) from None
    if (
        url.scheme != "https"
        or not url.hostname
        or url.username is not None
        or url.password is not None
        or url.path not in ("", "/")
        or url.query
        or url.fragment
    ):
        raise BMCConfigInvalid(problem)
    return f"https://{url.netloc}"


def _check_ca_bundle(pem: Any, machine: str) -> None:
    try:
        if not isinstance(pem, str):
            raise ValueError("not text")
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise BMCCertificateInvalid(
            f"Machine {machine}: spec.bmc.caBundle is not PEM certificates"
        ) from None


@dataclass(frozen=True)
class BMCCredentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, Any] | None, *, secret: str) -> BMCCredentials:
        """The login in a Secret's ``data``; :class:`BMCCredentialsInvalid` naming the Secret
        and the bad key (never the content) when it is missing or unusable."""
        if data is None:
            raise BMCCredentialsInvalid(f"BMC credentials Secret {secret} not found")
        try:
            username, password = text_values(data, SECRET_KEYS, secret=secret)
        except SecretValueError as e:
            raise BMCCredentialsInvalid(f"BMC credentials {e}") from None
        if ":" in username:
            # HTTP basic authentication cannot carry a user name with a colon.
            raise BMCCredentialsInvalid(f"BMC credentials Secret {secret}: username holds ':'")
        return cls(username, password)


# --- What to do -------------------------------------------------------------------------------


def plan_power_cycle(power_state: str, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """The resets that power-cycle a system in ``power_state`` on a BMC allowing ``allowed``
    ResetType values: ``(reset type, the power state it leads to)`` in order.

    A system that is off is simply powered on. Otherwise ForceRestart, else the BMC's
    PowerCycle, else ForceOff then On: a hung host does not answer a graceful request, so only
    forced resets are used."""
    power_on = next((t for t in ("On", "ForceOn") if t in allowed), None)
    if power_state in ("Off", "PoweringOff"):
        if power_on is None:
            raise BMCActionFailed("the system is off and the BMC allows neither On nor ForceOn")
        return [(power_on, "On")]
    if "ForceRestart" in allowed:
        return [("ForceRestart", "On")]
    if "PowerCycle" in allowed:
        return [("PowerCycle", "On")]
    if "ForceOff" in allowed and power_on is not None:
        return [("ForceOff", "Off"), (power_on, "On")]
    raise BMCActionFailed(
        "the BMC allows none of ForceRestart, PowerCycle, or ForceOff and On "
        f"(it allows {', '.join(sorted(allowed)) or 'nothing'})"
    )


# --- Errors -----------------------------------------------------------------------------------


def scrub(text: str, credentials: BMCCredentials | None) -> str:
    """``text`` bounded, without the password or a basic-auth token carrying it (a BMC may
    echo a request back)."""
    if credentials is not None and credentials.password:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode())
        for secret in (credentials.password, token.decode()):
            text = text.replace(secret, "***")
    if len(text) > MESSAGE_MAX:
        text = text[:MESSAGE_MAX] + "…"
    return text


_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(]*?)\s*\(")


def translate(
    error: BaseException, endpoint: BMCEndpoint, credentials: BMCCredentials | None
) -> RepairError:
    """The :class:`RepairError` a person reads for what sushy raised."""
    if isinstance(error, RepairError):
        return error
    where = f"BMC {endpoint.address} of Machine {endpoint.machine}"
    if isinstance(error, sushy_errors.AccessError):
        user = credentials.username if credentials else "?"
        if error.status_code == 403:
            return BMCAuthFailed(
                f"{where} refused user {user!r} the action (HTTP 403): the account lacks the "
                "privilege to control power and media"
            )
        return BMCAuthFailed(
            f"{where} refused the login of user {user!r} (HTTP {error.status_code}): check the "
            f"username and password in Secret {endpoint.secret}"
        )
    if isinstance(error, sushy_errors.ConnectionError):
        cause = _cause(error)
        if isinstance(cause, requests.exceptions.SSLError):
            detail = _VERIFY_FAILED.search(str(cause))
            if detail or "CERTIFICATE_VERIFY_FAILED" in str(cause):
                why = detail.group(1) if detail else "certificate verify failed"
                return BMCCertificateInvalid(
                    f"{where}: its TLS certificate is not trusted ({why}). Set spec.bmc.caBundle "
                    "to the CA that signs it or, knowing that anyone on the path could then "
                    "pose as the BMC, spec.bmc.insecureSkipVerify"
                )
            return BMCUnreachable(
                f"{where}: TLS handshake failed: {scrub(str(cause), credentials)}"
            )
        if isinstance(cause, requests.exceptions.Timeout):
            return BMCUnreachable(f"{where} did not answer in time")
        return BMCUnreachable(f"{where} cannot be reached: {_reason(cause, credentials)}")
    if isinstance(error, sushy_errors.HTTPError):
        said = scrub(str(error.detail or "no detail"), credentials)
        if error.status_code == 404:
            said += f" (is spec.bmc.systemID {endpoint.system_id} this BMC's System?)"
        return BMCActionFailed(f"{where} answered HTTP {error.status_code}: {said}")
    if isinstance(error, sushy_errors.SushyError):
        return BMCActionFailed(f"{where}: {scrub(str(error), credentials)}")
    return BMCActionFailed(f"{where}: unexpected {type(error).__name__} from the Redfish client")


def _cause(error: BaseException) -> BaseException | None:
    seen = error.__cause__ or error.__context__
    while seen is not None and not isinstance(seen, requests.exceptions.RequestException):
        seen = seen.__cause__ or seen.__context__
    return seen


def _reason(cause: BaseException | None, credentials: BMCCredentials | None) -> str:
    text = str(cause) if cause is not None else "no answer"
    for known in ("Connection refused", "No route to host", "Name or service not known"):
        if known in text:
            return known.lower()
    return scrub(text, credentials)


def _shown(url: str) -> str:
    """A URL as a message shows it: without a user or password it may carry."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --- The repairer -----------------------------------------------------------------------------


class RedfishRepairer:
    """The PowerCycle and Reinstall actions (:data:`BMC_ACTIONS`) through the Machine's BMC.

    ``secrets`` reads the credentials Secret in the Machine's namespace (see
    :func:`kokpit.providers.repair.secrets.secret_reader`). :meth:`close` stops the worker
    threads."""

    actions = frozenset(BMC_ACTIONS)
    repeatable: frozenset[str] = frozenset()

    def __init__(self, *, secrets: SecretReader, options: RedfishOptions | None = None) -> None:
        self._secrets = secrets
        self.options = options or RedfishOptions()
        self._pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="redfish")

    async def repair(self, action: str, target: RepairTarget) -> str:
        if action not in self.actions:
            raise BMCActionFailed(f"{action} is not a BMC action ({', '.join(BMC_ACTIONS)})")
        endpoint = BMCEndpoint.from_machine(target.machine)
        if action == "Reinstall" and endpoint.reinstall_image is None:
            raise BMCNotConfigured(
                f"Machine {endpoint.machine} has no spec.bmc.reinstallImage to reinstall from"
            )
        credentials = BMCCredentials.from_secret_data(
            await self._secrets(target.namespace, endpoint.secret), secret=endpoint.secret
        )
        if endpoint.insecure_skip_verify:
            log.warning(
                "BMC %s of Machine %s: TLS not verified (spec.bmc.insecureSkipVerify)",
                endpoint.address,
                endpoint.machine,
            )
        stop = threading.Event()
        work = _power_cycle if action == "PowerCycle" else _reinstall
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._pool, _run, work, endpoint, credentials, self.options, stop
        )
        try:
            return await asyncio.wait_for(future, self.options.action_timeout)
        except TimeoutError:
            raise BMCActionFailed(
                f"BMC {endpoint.address} of Machine {endpoint.machine}: {action} did not finish "
                f"within {self.options.action_timeout:g} s"
            ) from None
        finally:
            stop.set()

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


# --- In the worker thread ---------------------------------------------------------------------


class _Stopped(Exception):
    pass


def _run(
    work: Callable[[_Session], str],
    endpoint: BMCEndpoint,
    credentials: BMCCredentials,
    options: RedfishOptions,
    stop: threading.Event,
) -> str:
    """Log in, do ``work``, log out; every failure as a :class:`RepairError`."""
    try:
        with _Session(endpoint, credentials, options, stop) as session:
            return work(session)
    except _Stopped:
        raise BMCActionFailed(f"BMC of Machine {endpoint.machine}: stopped") from None
    except Exception as e:
        error = translate(e, endpoint, credentials)
        if not isinstance(e, RepairError | sushy_errors.SushyError):
            log.warning("BMC of Machine %s: unexpected %s", endpoint.machine, type(e).__name__)
        raise error from None


class _Session:
    """One login to one BMC and its System, in a worker thread. The untyped sushy objects stay
    in here."""

    def __init__(
        self,
        endpoint: BMCEndpoint,
        credentials: BMCCredentials,
        options: RedfishOptions,
        stop: threading.Event,
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self._credentials = credentials
        self._stop = stop
        self._ca_file: str | None = None
        self._root: Any = None
        self.system: Any = None

    def __enter__(self) -> _Session:
        try:
            verify: bool | str = True
            if self.endpoint.insecure_skip_verify:
                verify = False
                # urllib3 warns on every unverified request; the Machine's owner chose it and
                # the repairer logs it once per action instead.
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            elif self.endpoint.ca_bundle is not None:
                fd, self._ca_file = tempfile.mkstemp(prefix="kokpit-bmc-ca-", suffix=".pem")
                with os.fdopen(fd, "w") as f:
                    f.write(self.endpoint.ca_bundle)
                verify = self._ca_file
            self._connect(verify)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _connect(self, verify: bool | str) -> None:
        for attempt in range(1, self.options.connect_attempts + 1):
            self.check()
            try:
                self._root = sushy.Sushy(
                    self.endpoint.address,
                    username=self._credentials.username,
                    password=self._credentials.password,
                    verify=verify,
                    # One try per request: a reset whose answer was lost is not sent again.
                    server_side_retries=1,
                    server_side_retries_delay=1,
                    read_timeout=self.options.read_timeout,
                    connect_timeout=self.options.connect_timeout,
                )
                self.system = self._root.get_system(self.endpoint.system_id)
                return
            except sushy_errors.ConnectionError as e:
                unreachable = translate(e, self.endpoint, self._credentials)
                if not isinstance(unreachable, BMCUnreachable):
                    raise
                if attempt == self.options.connect_attempts:
                    raise
            self._close_root()
            self._sleep(self.options.connect_retry_delay)

    def __exit__(self, *_: object) -> None:
        self._close_root()
        if self._ca_file is not None:
            os.unlink(self._ca_file)
            self._ca_file = None

    def _close_root(self) -> None:
        root, self._root = self._root, None
        if root is None:
            return
        auth = getattr(root, "_auth", None)
        try:
            if auth is not None:
                auth.close()  # ends a Redfish session (BMCs allow few); nothing for basic auth
        except Exception as e:  # the action's outcome stands; a stale session times out
            log.info("BMC of Machine %s: logging out: %s", self.endpoint.machine, type(e).__name__)
        finally:
            root._auth = None
            root._conn.close()

    def check(self) -> None:
        """Raise :class:`_Stopped` when the caller has given up."""
        if self._stop.is_set():
            raise _Stopped()

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped()

    def power_state(self) -> str:
        self.system.refresh(force=True)
        state = self.system.power_state
        return str(state.value) if state is not None else "Unknown"

    def reset(self, reset_type: str) -> None:
        self.check()
        self.system.reset_system(sushy.ResetType(reset_type))

    def wait_power(self, want: str) -> None:
        deadline = time.monotonic() + self.options.power_timeout
        while True:
            state = self.power_state()
            if state == want:
                return
            if time.monotonic() >= deadline:
                raise BMCActionFailed(
                    f"BMC {self.endpoint.address} of Machine {self.endpoint.machine}: the system "
                    f"is {state}, not {want}, {self.options.power_timeout:g} s after the reset"
                )
            self._sleep(self.options.poll_interval)

    def power_cycle(self) -> str:
        before = self.power_state()
        allowed = frozenset(t.value for t in self.system.get_allowed_reset_system_values())
        plan = plan_power_cycle(before, allowed)
        for reset_type, leads_to in plan:
            self.reset(reset_type)
            self.wait_power(leads_to)
        return f"was {before}; {' then '.join(t for t, _ in plan)}; now On"

    def cd_media(self) -> Any:
        """The virtual media device taking CD/DVD images: the System's own (Redfish 1.13+),
        else its managers'."""
        try:
            collections = [self.system.virtual_media]
        except sushy_errors.MissingAttributeError:
            collections = [m.virtual_media for m in self.system.managers]
        for collection in collections:
            for media in collection.get_members():
                types = {t.value for t in media.media_types or ()}
                if types & {"CD", "DVD"}:
                    return media
        raise BMCActionFailed(
            f"BMC {self.endpoint.address} of Machine {self.endpoint.machine}: the system has "
            "no virtual media device for CD/DVD images"
        )

    def reinstall(self) -> str:
        image = self.endpoint.reinstall_image
        if image is None:  # checked before the thread started; kept for the type checker
            raise BMCNotConfigured(f"Machine {self.endpoint.machine} has no reinstallImage")
        media = self.cd_media()
        self.check()
        if media.inserted:
            media.eject_media()
        self.check()
        media.insert_media(image, inserted=True, write_protected=True)
        self.check()
        self.system.set_system_boot_options(
            target=sushy.BootSource.CD, enabled=sushy.BootSourceOverrideEnabled.ONCE
        )
        # Only Inserted is checked: BMCs report the Image URL in their own spelling.
        media.refresh(force=True)
        if not media.inserted:
            raise BMCActionFailed(
                f"BMC {self.endpoint.address} of Machine {self.endpoint.machine}: virtual media "
                f"{media.identity} reports no media inserted after inserting {_shown(image)}"
            )
        cycled = self.power_cycle()
        return f"booting once from {_shown(image)} (virtual media {media.identity}): {cycled}"


def _power_cycle(session: _Session) -> str:
    return f"PowerCycle: {session.power_cycle()}"


def _reinstall(session: _Session) -> str:
    return f"Reinstall: {session.reinstall()}"
