"""The official Microsoft Graph Python SDK receiving a syncgate refusal as an ordinary ODataError.

syncgate runs with a partner allow-list that does not list REFUSED_PARTNER (see tests/sdk.rs). The
SDK creates that partner (allowed: it does not enable sync) and then tries to enable user sync for
it; syncgate must refuse with 403 and a Graph-shaped error whose code is SyncgatePolicyViolation and
whose message names the rule, and the SDK must surface it as ODataError like any Graph error. The
emulator's own state must show nothing was enabled.

Environment: SYNCGATE_URL, EMULATOR_URL, GRAPH_TOKEN, REFUSED_PARTNER, RULE_ID.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback

import msgraph_sdk_check as common
from msgraph.generated.models.cross_tenant_access_policy_configuration_partner import (
    CrossTenantAccessPolicyConfigurationPartner,
)
from msgraph.generated.models.cross_tenant_identity_sync_policy_partner import (
    CrossTenantIdentitySyncPolicyPartner,
)
from msgraph.generated.models.cross_tenant_user_sync_inbound import CrossTenantUserSyncInbound
from msgraph.generated.models.o_data_errors.o_data_error import ODataError


async def run(syncgate_url: str, emulator_url: str, token: str, partner: str, rule: str) -> None:
    sent = common.SentRequests(token, syncgate_url)
    client = common.graph_client(syncgate_url, token, sent)
    partners = client.policies.cross_tenant_access_policy.partners

    common.begin("POST partners (no sync: allowed)")
    created = await partners.post(CrossTenantAccessPolicyConfigurationPartner(tenant_id=partner))
    common.expect(created is not None and created.tenant_id == partner, f"POST returned {created!r}")
    print(f"ok: created partner {partner}")

    common.begin("PUT identitySynchronization for a partner not on the allow-list")
    policy = CrossTenantIdentitySyncPolicyPartner(
        display_name="Not allowed",
        user_sync_inbound=CrossTenantUserSyncInbound(is_sync_allowed=True),
    )
    builder = partners.by_cross_tenant_access_policy_configuration_partner_tenant_id(partner)
    try:
        await builder.identity_synchronization.put(policy)
    except ODataError as e:
        common.expect_odata_error(e, 403, "SyncgatePolicyViolation", "the refused PUT")
        message = e.error.message or ""
        common.expect(rule in message, f"the refusal does not name rule {rule!r}: {message!r}")
        print(f"ok: the SDK raised {common.describe(e)}")
    else:
        raise common.CheckFailed("syncgate let a PUT for a partner not on the allow-list through")

    common.begin("the emulator's state after the refusal")
    state = common.emulator_json(emulator_url, "/_emulator/state")
    common.expect(
        partner not in state.get("identitySynchronization", {}),
        f"a sync policy reached the emulator: {json.dumps(state['identitySynchronization'])}",
    )
    print("ok: nothing was sent to Graph")


def main() -> int:
    try:
        args = [common.require_env(n) for n in ("SYNCGATE_URL", "EMULATOR_URL", "GRAPH_TOKEN", "REFUSED_PARTNER", "RULE_ID")]
        asyncio.run(asyncio.wait_for(run(*args), common.DEADLINE_SECONDS))
    except common.CheckFailed as e:
        failure = str(e)
    except ODataError as e:
        failure = f"the SDK raised {common.describe(e)}"
    except Exception as e:
        traceback.print_exc()
        failure = f"{type(e).__name__}: {e}"
    else:
        print("PASS: msgraph-sdk received syncgate's refusal as an ODataError naming the rule")
        return 0
    print(f"FAIL during {common.current_step}: {failure}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
