// The official Microsoft Graph JavaScript client (@microsoft/microsoft-graph-client 3.0.7) sends a
// JSON batch through syncgate and reads every sub-response with BatchResponseContent.
//
// Why: BatchResponseContent only parses a sub-response body as JSON when its headers carry
// "Content-Type" spelled exactly so (Graph's casing). When syncgate unbatched a batch it used to
// return "content-type", and the client could read none of the bodies, syncgate's own refusals
// included. The batch holds a governed change syncgate refuses by rule (so it is unbatched), a
// plain read that syncgate forwards, and a read Graph answers 404.
//
// Environment: SYNCGATE_URL (https://; NODE_EXTRA_CA_CERTS trusts its certificate), GRAPH_TOKEN, REFUSED_PARTNER, RULE_ID. Exit 0 when every check holds.

import {
  BatchRequestContent,
  BatchResponseContent,
  Client,
} from "@microsoft/microsoft-graph-client";

const base = process.env.SYNCGATE_URL;
const token = process.env.GRAPH_TOKEN;
const partner = process.env.REFUSED_PARTNER;
const rule = process.env.RULE_ID;
const missing = "00000000-0000-4000-8000-0000000000ee";

function expect(condition, message) {
  if (!condition) {
    console.error(`FAILED: ${message}`);
    process.exit(1);
  }
}

const client = Client.init({
  authProvider: (done) => done(null, token),
  baseUrl: base,
  defaultVersion: "v1.0",
  // The client sends its token only to https:// URLs of Graph's hosts or of these.
  customHosts: new Set([new URL(base).hostname]),
});

// The partner exists first (creating it enables nothing, so the rule allows it).
await client
  .api("/policies/crossTenantAccessPolicy/partners")
  .post({ tenantId: partner });
console.log(`ok: created partner ${partner}`);

// BatchRequestContent keeps the path after the host, so these URLs must not repeat the version.
const host = "https://graph.microsoft.com";
const partnerPath = `/policies/crossTenantAccessPolicy/partners/${partner}`;
const batch = new BatchRequestContent([
  {
    id: "enable",
    request: new Request(`${host}${partnerPath}/identitySynchronization`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userSyncInbound: { isSyncAllowed: true } }),
    }),
  },
  { id: "partner", request: new Request(`${host}${partnerPath}`, { method: "GET" }) },
  {
    id: "missing",
    request: new Request(
      `${host}/policies/crossTenantAccessPolicy/partners/${missing}/identitySynchronization`,
      { method: "GET" },
    ),
  },
]);
const answer = await client
  .api("/$batch")
  .post(await batch.getContent());
const responses = new BatchResponseContent(answer);

const enable = responses.getResponseById("enable");
expect(enable && enable.status === 403, `the refused change answered ${enable?.status}`);
const refusal = await enable.json();
expect(
  refusal?.error?.code === "SyncgatePolicyViolation",
  `the refusal body reads ${JSON.stringify(refusal)}`,
);
expect(refusal.error.message.includes(rule), `the refusal does not name ${rule}`);
console.log(`ok: the refusal reads as ${refusal.error.code}`);

const read = responses.getResponseById("partner");
expect(read && read.status === 200, `the partner read answered ${read?.status}`);
const document = await read.json();
expect(document.tenantId === partner, `the partner body reads ${JSON.stringify(document)}`);
console.log("ok: the forwarded read's body is JSON");

const absent = responses.getResponseById("missing");
expect(absent && absent.status === 404, `the missing read answered ${absent?.status}`);
const notFound = await absent.json();
expect(typeof notFound?.error?.code === "string", `the 404 body reads ${JSON.stringify(notFound)}`);
console.log(`ok: the upstream's 404 reads as ${notFound.error.code}`);
