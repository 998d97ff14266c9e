"""Drive the official Microsoft Graph Python SDK (msgraph-sdk) through syncgate to the emulator.

The SDK is used as a customer would use it, with one change: the request adapter's base URL is
syncgate's (`{SYNCGATE_URL}/v1.0`) instead of https://graph.microsoft.com/v1.0, and the bearer
token comes from GRAPH_TOKEN instead of Entra ID. Every call goes through the SDK's fluent API, its
default middleware (retry, redirect, telemetry, ...) and its own (de)serialisation, so a response
shape or error document the SDK cannot handle fails here.

After each write the emulator's own state (`{EMULATOR_URL}/_emulator/state`, read directly, not
through the proxy) must show the change, and `{EMULATOR_URL}/_emulator/requests` must list every
request the SDK sent: together they prove the calls really crossed the proxy to the emulator.

Environment: SYNCGATE_URL (proxy base URL), EMULATOR_URL (emulator base URL), GRAPH_TOKEN.
Prints one line per step; exits 1 with a message naming the failed step on any failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
import urllib.error
import urllib.request
from typing import Any, Optional
from urllib.parse import urlparse

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_http.kiota_client_factory import KiotaClientFactory
from msgraph import GraphServiceClient
from msgraph._version import VERSION as SDK_VERSION
from msgraph.generated.models.cross_tenant_access_policy_configuration_partner import (
    CrossTenantAccessPolicyConfigurationPartner,
)
from msgraph.generated.models.cross_tenant_identity_sync_policy_partner import (
    CrossTenantIdentitySyncPolicyPartner,
)
from msgraph.generated.models.cross_tenant_user_sync_inbound import CrossTenantUserSyncInbound
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as SDK_MIDDLEWARE_OPTIONS
from msgraph_core import GraphClientFactory

# The partner tenant in Microsoft's own PUT identitySynchronization example.
PARTNER_TENANT_ID = "90e29127-71ad-49c7-9ce8-db3f41ea06f1"
DISPLAY_NAME = "Fabrikam"
# How long the whole check may take before it counts as hung.
DEADLINE_SECONDS = 120
# Hosts to which the SDK's own Azure token provider also allows plain http.
LOCALHOST_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class CheckFailed(Exception):
    """An expectation about the SDK, the proxy or the emulator did not hold."""


# The step under way, named in the failure message whatever goes wrong in it.
current_step = "setup"


def begin(step: str) -> None:
    global current_step
    current_step = step


def require_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise CheckFailed(f"environment variable {name} is not set")
    return value.rstrip("/")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class StaticTokenProvider(AccessTokenProvider):
    """Hands out one fixed token, only to the proxy's host.

    Kiota's BaseBearerTokenAuthenticationProvider has no https rule of its own; the SDK's Azure
    Identity provider refuses to send a token over plain http except to localhost. This provider
    keeps that rule: the check sends its token over http only because the proxy is on loopback.
    """

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._validator = AllowedHostsValidator([host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] = {}
    ) -> str:
        if not self._validator.is_url_host_valid(uri):
            raise CheckFailed(f"the SDK asked for a token for {uri}, which is not the proxy")
        parsed = urlparse(uri)
        if parsed.scheme != "https" and parsed.hostname not in LOCALHOST_NAMES:
            raise CheckFailed(f"refusing to send a bearer token over plain http to {uri}")
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


class SentRequests:
    """What the SDK put on the wire (method, path and query, status), seen by httpx event hooks."""

    def __init__(self, token: str, proxy_url: str) -> None:
        self._expected_auth = f"Bearer {token}"
        self._proxy = urlparse(proxy_url)
        self.seen: list[tuple[str, str, int]] = []

    async def on_request(self, request: httpx.Request) -> None:
        expect(
            (request.url.scheme, request.url.netloc.decode("ascii"))
            == (self._proxy.scheme, self._proxy.netloc),
            f"the SDK sent {request.method} {request.url}, "
            f"not to the proxy at {self._proxy.geturl()}",
        )
        auth = request.headers.get("authorization")
        expect(
            auth == self._expected_auth,
            f"the SDK sent {request.method} {request.url} without GRAPH_TOKEN as its bearer "
            f"(Authorization: {auth!r})",
        )

    async def on_response(self, response: httpx.Response) -> None:
        request = response.request
        # Path and query as sent, which is how the emulator logs them.
        path = request.url.raw_path.decode("ascii")
        self.seen.append((request.method, path, response.status_code))


def graph_client(syncgate_url: str, token: str, sent: SentRequests) -> GraphServiceClient:
    """A GraphServiceClient built the way msgraph.GraphRequestAdapter builds its default one,
    plus httpx event hooks (which only observe) and the proxy as the base URL."""
    host = urlparse(syncgate_url).hostname
    expect(bool(host), f"SYNCGATE_URL {syncgate_url!r} has no host")
    auth = BaseBearerTokenAuthenticationProvider(StaticTokenProvider(token, host))
    http_client = KiotaClientFactory.get_default_client()
    http_client.event_hooks = {"request": [sent.on_request], "response": [sent.on_response]}
    http_client = GraphClientFactory.create_with_default_middleware(
        client=http_client, options=SDK_MIDDLEWARE_OPTIONS
    )
    adapter = GraphRequestAdapter(auth, client=http_client)
    adapter.base_url = f"{syncgate_url}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def emulator_json(emulator_url: str, path: str) -> Any:
    """GET a test endpoint straight from the emulator (not through the proxy)."""
    url = f"{emulator_url}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CheckFailed(f"could not read {url}: {e}") from e


def emulator_state(emulator_url: str) -> dict[str, dict[str, Any]]:
    state = emulator_json(emulator_url, "/_emulator/state")
    for key in ("partners", "identitySynchronization"):
        expect(
            isinstance(state, dict) and isinstance(state.get(key), dict),
            f"/_emulator/state has no {key!r} map: {json.dumps(state)[:2000]}",
        )
    return state


def stored(state: dict[str, dict[str, Any]], key: str) -> Optional[dict[str, Any]]:
    return state[key].get(PARTNER_TENANT_ID)


def describe(error: ODataError) -> str:
    code = error.error.code if error.error else None
    message = error.error.message if error.error else None
    return f"ODataError(status={error.response_status_code}, code={code!r}, message={message!r})"


def expect_odata_error(error: ODataError, status: int, code: str, what: str) -> None:
    got_code = error.error.code if error.error else None
    expect(
        error.response_status_code == status and got_code == code,
        f"{what}: expected ODataError {status} {code}, got {describe(error)}",
    )


def expect_sync_policy_in_state(state: dict[str, dict[str, Any]], what: str) -> None:
    policy = stored(state, "identitySynchronization")
    expect(
        isinstance(policy, dict),
        f"{what}: the emulator holds no identitySynchronization for {PARTNER_TENANT_ID}: "
        f"{json.dumps(state['identitySynchronization'])}",
    )
    expect(
        policy.get("displayName") == DISPLAY_NAME
        and (policy.get("userSyncInbound") or {}).get("isSyncAllowed") is True,
        f"{what}: the emulator's identitySynchronization is not the one the SDK sent: "
        f"{json.dumps(policy)}",
    )


async def run(syncgate_url: str, emulator_url: str, token: str) -> None:
    # Requests sent to the proxy's address turning up at the emulator prove the proxy carried them.
    expect(
        urlparse(syncgate_url).netloc != urlparse(emulator_url).netloc,
        f"SYNCGATE_URL and EMULATOR_URL are the same server ({syncgate_url}); "
        "nothing would cross the proxy",
    )
    sent = SentRequests(token, syncgate_url)
    graph = graph_client(syncgate_url, token, sent)
    partners = graph.policies.cross_tenant_access_policy.partners
    partner = partners.by_cross_tenant_access_policy_configuration_partner_tenant_id(
        PARTNER_TENANT_ID
    )
    sync = partner.identity_synchronization
    print(f"msgraph-sdk {SDK_VERSION}: base URL {syncgate_url}/v1.0, emulator {emulator_url}")

    begin("reading the emulator's initial state")
    state = emulator_state(emulator_url)
    expect(
        stored(state, "partners") is None and stored(state, "identitySynchronization") is None,
        f"the emulator already knows partner {PARTNER_TENANT_ID}: {json.dumps(state)}",
    )
    print(f"ok: the emulator starts without partner {PARTNER_TENANT_ID}")

    begin("POST partners (partners.post)")
    created = await partners.post(
        CrossTenantAccessPolicyConfigurationPartner(tenant_id=PARTNER_TENANT_ID)
    )
    expect(
        created is not None and created.tenant_id == PARTNER_TENANT_ID,
        f"POST partners returned {created!r}, expected tenant_id {PARTNER_TENANT_ID}",
    )
    state = emulator_state(emulator_url)
    expect(
        isinstance(stored(state, "partners"), dict),
        f"after POST partners the emulator has no partner {PARTNER_TENANT_ID}: "
        f"{json.dumps(state['partners'])}",
    )
    print(f"ok: partners.post created partner {created.tenant_id}")

    begin("PUT identitySynchronization (identity_synchronization.put)")
    policy = CrossTenantIdentitySyncPolicyPartner(
        display_name=DISPLAY_NAME,
        user_sync_inbound=CrossTenantUserSyncInbound(is_sync_allowed=True),
    )
    put_result = await sync.put(policy)
    expect(
        put_result is None,
        f"PUT identitySynchronization should be 204 with no body, the SDK returned {put_result!r}",
    )
    state = emulator_state(emulator_url)
    expect_sync_policy_in_state(state, "after PUT identitySynchronization")
    print("ok: identity_synchronization.put created the sync policy (204)")

    begin("GET identitySynchronization (identity_synchronization.get)")
    read = await sync.get()
    expect(read is not None, "GET identitySynchronization returned no body")
    expect(
        read.display_name == DISPLAY_NAME,
        f"GET identitySynchronization: display_name {read.display_name!r}, "
        f"expected {DISPLAY_NAME!r}",
    )
    expect(
        read.user_sync_inbound is not None and read.user_sync_inbound.is_sync_allowed is True,
        f"GET identitySynchronization: user_sync_inbound {read.user_sync_inbound!r}, "
        "expected is_sync_allowed True",
    )
    print(
        f"ok: identity_synchronization.get read display_name={read.display_name!r}, "
        f"is_sync_allowed={read.user_sync_inbound.is_sync_allowed}"
    )

    begin("the second PUT identitySynchronization, which must conflict")
    before = state
    try:
        await sync.put(policy)
    except ODataError as e:
        expect_odata_error(e, 409, "Request_MultipleObjectsWithSameKeyValue", "second PUT")
        print(f"ok: a second identity_synchronization.put raised {describe(e)}")
    else:
        raise CheckFailed("a second PUT identitySynchronization succeeded; expected ODataError 409")
    state = emulator_state(emulator_url)
    expect(
        stored(state, "identitySynchronization") == stored(before, "identitySynchronization"),
        "the refused second PUT changed the emulator's identitySynchronization: "
        f"{json.dumps(stored(before, 'identitySynchronization'))} -> "
        f"{json.dumps(stored(state, 'identitySynchronization'))}",
    )
    print("ok: the refused PUT left the emulator's state unchanged")

    begin("DELETE identitySynchronization (identity_synchronization.delete)")
    await sync.delete()
    state = emulator_state(emulator_url)
    expect(
        stored(state, "identitySynchronization") is None,
        "after DELETE identitySynchronization the emulator still holds it: "
        f"{json.dumps(stored(state, 'identitySynchronization'))}",
    )
    expect(
        isinstance(stored(state, "partners"), dict),
        "DELETE identitySynchronization also removed the partner from the emulator",
    )
    print("ok: identity_synchronization.delete removed the sync policy")

    begin("GET identitySynchronization after its DELETE, which must be 404")
    try:
        gone = await sync.get()
    except ODataError as e:
        expect_odata_error(e, 404, "Request_ResourceNotFound", "GET after DELETE")
        print(f"ok: identity_synchronization.get after delete raised {describe(e)}")
    else:
        raise CheckFailed(f"GET after DELETE returned {gone!r}; expected ODataError 404")

    begin("DELETE the partner (partners.by_..._tenant_id(id).delete)")
    await partner.delete()
    state = emulator_state(emulator_url)
    expect(
        stored(state, "partners") is None,
        "after DELETE partner the emulator still holds it: "
        f"{json.dumps(stored(state, 'partners'))}",
    )
    print(f"ok: partner {PARTNER_TENANT_ID} deleted")

    # The emulator's log may hold more than the SDK sent (e.g. reads the proxy makes itself), but
    # every SDK request must be in it, in order, with the status the SDK received.
    begin("matching the SDK's requests with the emulator's request log")
    expect(len(sent.seen) == 7, f"expected the SDK to send 7 requests, it sent {sent.seen}")
    listing = emulator_json(emulator_url, "/_emulator/requests")
    log = listing.get("value") if isinstance(listing, dict) else listing
    expect(
        isinstance(log, list),
        "/_emulator/requests is neither a list nor {\"value\": [...]}: "
        f"{json.dumps(listing)[:2000]}",
    )
    received = iter([(r.get("method"), r.get("path"), r.get("status")) for r in log])
    missing = [request for request in sent.seen if request not in received]
    expect(
        not missing,
        f"the emulator never received (in order) these SDK requests: {missing}; "
        f"it logged {json.dumps(log)}",
    )
    print(f"ok: all {len(sent.seen)} SDK requests reached the emulator through the proxy")


def main() -> int:
    try:
        syncgate_url = require_env("SYNCGATE_URL")
        emulator_url = require_env("EMULATOR_URL")
        token = require_env("GRAPH_TOKEN")
        asyncio.run(asyncio.wait_for(run(syncgate_url, emulator_url, token), DEADLINE_SECONDS))
    except CheckFailed as e:
        failure = str(e)
    except ODataError as e:
        failure = f"the SDK raised {describe(e)}"
    except asyncio.TimeoutError:
        failure = f"the check did not finish within {DEADLINE_SECONDS}s"
    except Exception as e:  # e.g. the proxy refusing connections: with its traceback
        traceback.print_exc()
        failure = f"{type(e).__name__}: {e}"
    else:
        print("PASS: msgraph-sdk created, read and deleted an identitySynchronization via syncgate")
        return 0
    print(f"FAIL during {current_step}: {failure}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
