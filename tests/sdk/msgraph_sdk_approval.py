"""The official Microsoft Graph Python SDK and the change-approval gate.

syncgate runs with a rule that holds sync for HELD_PARTNER for approval (see tests/sdk.rs). The SDK
creates the partner (allowed) and tries to enable user sync for it: syncgate must refuse with 403
SyncgateApprovalRequired, and the SDK must surface it as an ordinary ODataError whose message and
innerError carry the approval id. An approver (a second person, with an admin API key) approves it
through the admin API; then the very same SDK call, unchanged, succeeds, and the emulator holds the
policy. Nothing reached Graph before the approval.

Environment: SYNCGATE_URL, SYNCGATE_ADMIN_URL, EMULATOR_URL, GRAPH_TOKEN, HELD_PARTNER,
APPROVER_KEY.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import traceback
import urllib.error
import urllib.request

import msgraph_sdk_check as common
from msgraph.generated.models.cross_tenant_access_policy_configuration_partner import (
    CrossTenantAccessPolicyConfigurationPartner,
)
from msgraph.generated.models.cross_tenant_identity_sync_policy_partner import (
    CrossTenantIdentitySyncPolicyPartner,
)
from msgraph.generated.models.cross_tenant_user_sync_inbound import CrossTenantUserSyncInbound
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def approve(admin_url: str, key: str, approval_id: str) -> dict:
    """Vote approve through the admin API, as an approver's script would."""
    request = urllib.request.Request(
        f"{admin_url}/api/v1/approvals/{approval_id}/approve",
        data=json.dumps({"comment": "checked with the partner"}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise common.CheckFailed(f"the vote was refused: {e.code} {e.read()!r}") from e


async def run(syncgate_url, admin_url, emulator_url, token, partner, key) -> None:
    sent = common.SentRequests(token, syncgate_url)
    client = common.graph_client(syncgate_url, token, sent)
    partners = client.policies.cross_tenant_access_policy.partners

    common.begin("POST partners (no sync: allowed)")
    created = await partners.post(CrossTenantAccessPolicyConfigurationPartner(tenant_id=partner))
    common.expect(created is not None and created.tenant_id == partner, f"POST returned {created!r}")

    def enable_sync():
        policy = CrossTenantIdentitySyncPolicyPartner(
            display_name="Northwind",
            user_sync_inbound=CrossTenantUserSyncInbound(is_sync_allowed=True),
        )
        builder = partners.by_cross_tenant_access_policy_configuration_partner_tenant_id(partner)
        return builder.identity_synchronization.put(policy)

    common.begin("PUT identitySynchronization: held for approval")
    try:
        await enable_sync()
    except ODataError as e:
        common.expect_odata_error(e, 403, "SyncgateApprovalRequired", "the held PUT")
        message = e.error.message or ""
        found = UUID.findall(message)
        common.expect(bool(found), f"the message names no approval id: {message!r}")
        inner = e.error.inner_error
        extra = dict(getattr(inner, "additional_data", None) or {})
        # The SDK reads innerError's GUID-shaped values as UUID objects.
        approval_id = str(extra.get("syncgate-approval-id"))
        common.expect(
            approval_id in found,
            f"innerError carries approval id {approval_id!r}, the message {found}: {extra}",
        )
        print(f"ok: the SDK raised {common.describe(e)}; approval {approval_id}")
    else:
        raise common.CheckFailed("syncgate let a change needing approval through")
    state = common.emulator_json(emulator_url, "/_emulator/state")
    common.expect(
        partner not in state.get("identitySynchronization", {}),
        "a sync policy reached the emulator before the approval",
    )

    common.begin("an approver approves it through the admin API")
    after = approve(admin_url, key, approval_id)
    common.expect(after.get("status") == "approved", f"the request is {after.get('status')!r}")
    print(f"ok: approval {approval_id} is approved")

    common.begin("the same SDK call again: sent under the approval")
    await enable_sync()
    state = common.emulator_json(emulator_url, "/_emulator/state")
    policy = state.get("identitySynchronization", {}).get(partner)
    common.expect(
        isinstance(policy, dict) and policy.get("userSyncInbound", {}).get("isSyncAllowed") is True,
        f"the emulator holds {json.dumps(policy)}",
    )
    print("ok: the change reached Graph once approved")


def main() -> int:
    try:
        names = ("SYNCGATE_URL", "SYNCGATE_ADMIN_URL", "EMULATOR_URL", "GRAPH_TOKEN", "HELD_PARTNER", "APPROVER_KEY")
        args = [common.require_env(n) for n in names]
        asyncio.run(asyncio.wait_for(run(*args), common.DEADLINE_SECONDS))
    except common.CheckFailed as e:
        failure = str(e)
    except ODataError as e:
        failure = f"the SDK raised {common.describe(e)}"
    except Exception as e:
        traceback.print_exc()
        failure = f"{type(e).__name__}: {e}"
    else:
        print("PASS: msgraph-sdk got SyncgateApprovalRequired as an ODataError, then succeeded once approved")
        return 0
    print(f"FAIL during {common.current_step}: {failure}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
