#!/usr/bin/env python3
"""Write the hand-made seed inputs of the four fuzz targets into fuzz/corpus/<target>/.

The seeds are valid requests of every governed kind plus the attack strings of issue 7 (scheme
without `//`, leading space, TAB/CR/LF, padded or NBSP methods, nested $batch, partner
sub-navigation writes, duplicate keys, deep nesting). Seeds that break a property of the current
classifier are moved to fuzz/findings/ by hand after triage (see fuzz/findings/README.md).
Input formats: see src/fuzzing/mod.rs.
"""
import base64, hashlib, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551"
KU = K.upper()
CTAP = "policies/crossTenantAccessPolicy"
P = f"{CTAP}/partners"
TEMPLATE = f"{CTAP}/templates/multiTenantOrganizationIdentitySynchronization"

def write(target, data, name=None):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    name = name or hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# (method, target, headers): request targets, valid and tricky.
URLS = [
    ("PATCH", f"/v1.0/{P}/{K}/identitySynchronization", []),
    ("PUT", f"/beta/{P}/{KU}/identitySynchronization", []),
    ("DELETE", f"/v1.0/{P}/{K}/identitySynchronization", []),
    ("PATCH", f"/v1.0/{P}/{K}", []),
    ("DELETE", f"/v1.0/{P}('{K}')", []),
    ("POST", f"/v1.0/{P}", []),
    ("GET", f"/v1.0/{P}?$expand=identitySynchronization", []),
    ("GET", f"/beta/{P}/{K}/identitySynchronization?$select=tenantId", []),
    ("GET", "/v1.0/users?$top=5", []),
    ("PATCH", "/v1.0/users/someone", []),
    ("PATCH", f"/v1.0/{CTAP}/default", []),
    ("PATCH", f"/v1.0/{CTAP}", []),
    ("PATCH", f"/V1.0/Policies/CrossTenantAccessPolicy/Partners(tenantId='{KU}')/microsoft.graph.identitySynchronization", []),
    ("PATCH", f"/v1.0/{P}(@a)/identitySynchronization?@a='{K}'", []),
    ("POST", f"/beta/policies/deletedItems/crossTenantPartners/{K}/restore", []),
    ("POST", f"/beta/policies/deletedItems/crossTenantSyncPolicyPartners(tenantId='{K}')/microsoft.graph.restore", []),
    ("POST", f"/beta/policies/deletedItems/crossTenantPartners/{K}/identitySynchronization/restore", []),
    ("DELETE", f"/beta/policies/deletedItems/crossTenantPartners/{K}", []),
    ("DELETE", f"/beta/policies/deletedItems/crossTenantSyncPolicyPartners/{K}", []),
    ("PUT", f"/beta/policies/deletedItems/crossTenantPartners/{K}/identitySynchronization", []),
    ("DELETE", f"/v1.0/policies/deletedItems/crossTenantPartners/{K}", []),
    ("PATCH", f"/v1.0/{TEMPLATE}", []),
    ("POST", f"/v1.0/{TEMPLATE}/resetToDefaultSettings", []),
    ("PATCH", f"/v1.0/policies/crossTenantIdentitySyncPolicy/partners/{K}", []),
    ("POST", "/v1.0/$batch", []),
    ("POST", "/BETA/%24batch", []),
    ("GET", "/v1.0/$batch", []),
    ("POST", "/v1.0/users/$batch", []),
    ("PATCH", f"/v1.0/%2570olicies/crossTenantAccessPolicy/partners/{K}", []),
    ("PATCH", f"/v1.0//{P}/{K}/identitySynchronization", []),
    ("PATCH", f"/x/../v1.0/{P}/{K}/identitySynchronization", []),
    ("PATCH", f"/v1.0/{P}/{K}%2F..%2Fx/identitySynchronization", []),
    ("PATCH", f"/v1.0/%u0070olicies/crossTenantAccessPolicy/partners/{K}", []),
    ("PATCH", f"/v1.0/users/%C0%AE%C0%AE/{P}/{K}", []),
    ("PATCH", f"/v1.0/policies./crossTenantAccessPolicy;x=1/partners/{K}", []),
    ("PATCH", f"/v1.0/%20policies%20/crossTenantAccessPolicy()/partners/{K}", []),
    ("PATCH", f"/v1.0\\{P}\\{K}", []),
    ("PATCH", f"/v1.0/{P}/{K}/identitySynchronization/userSyncInbound", []),
    ("PATCH", f"/v1.0/{P}/{K}/automaticUserConsentSettings", []),
    ("PATCH", f"/v1.0/{P}/contoso.com", []),
    ("GET", f"/v1.0/{P}/{K}/identitySynchronization", ["X-HTTP-Method-Override: PATCH"]),
    ("POST", "/v1.0/$batch", ["X-HTTP-Method-Override: GET"]),
    ("GET", "/v1.0/users", [f"X-Original-URL: /v1.0/{P}/{K}"]),
    ("GET", f"/v1.0/{P}/{K}?_method=DELETE", []),
    ("OPTIONS", "*", []),
    ("PATCH", f"/v1.0/{CTAP}/templates/multiTenantOrganizationPartnerConfiguration", []),
    ("PATCH", f"/v1.0/policies/microsoft.graph.policyRoot/{P}/{K}", []),
    ("PATCH", f"/v1.0/pol%C4%B1cies/{P[9:]}/{K}", []),
    # Issue 7's attack strings, as request targets.
    ("PATCH", f"/v1.0/{P}/{K}/m365Capabilities", []),
    ("PUT", f"/v1.0/{P}/{K}/serviceProviderConstraints", []),
    ("POST", f"/beta/{P}/{K}/m365Capabilities/x", []),
    ("post", "/v1.0/$batch", []),
    ("PUT", "/v1.0/$batch", []),
    ("PATCH", f"/v1.0/policies/cross\ttenantAccessPolicy/partners/{K}", []),
    ("PATCH", f"/v1.0/poli\r\ncies/crossTenantAccessPolicy/partners/{K}", []),
    ("PATCH", f"/v1\t.0/{P}/{K}", []),
    ("PATCH", f"/v1.0/policies/cross%20tenantAccessPolicy/partners/{K}", []),
    ("PATCH", f"/ v1.0/{P}/{K}", []),
    ("patch", f"/v1.0/{P}/{K}", []),
]

for method, target, headers in URLS:
    data = "\0".join([method, target] + headers)
    write("canonicaliser", data)
    if not headers:
        write("differential", f"{method}\0{target}")

# Body reader: selector '0'..'7' = rule (Empty, Sync, Partner, Template) x version (v1.0, beta).
sync = {"userSyncInbound": {"isSyncAllowed": True}}
BODIES = [
    ("0", ""), ("0", " \r\n\t"), ("0", "{}"), ("4", "null"),
    ("1", json.dumps(sync)),
    ("1", json.dumps({"tenantId": K, "displayName": "Contoso", **sync})),
    ("5", json.dumps({"userSyncInbound": {"isSyncAllowed": False}, "groupSyncInbound": {"isSyncAllowed": True}, "deletedDateTime": None})),
    ("1", json.dumps({"groupSyncInbound": {"isSyncAllowed": True}})),
    ("2", json.dumps({"tenantId": K, "inboundTrust": {"isMfaAccepted": True}, "b2bCollaborationInbound": {"usersAndGroups": {"accessType": "allowed", "targets": [{"target": "AllUsers", "targetType": "user"}]}}})),
    ("2", json.dumps({"identitySynchronization": {"tenantId": K, **sync}})),
    ("6", json.dumps({"blockServiceProviderOutboundAccess": True, "@odata.type": "#microsoft.graph.crossTenantAccessPolicyConfigurationPartner"})),
    ("3", json.dumps({"templateApplicationLevel": "newPartners,existingPartners", **sync})),
    ("7", json.dumps({"id": "x", "templateApplicationLevel": "none"})),
    # Duplicates, directly and behind escapes and nesting.
    ("1", '{"userSyncInbound":{"isSyncAllowed":true},"userSyncInbound":{"isSyncAllowed":false}}'),
    ("1", '{"userSyncInbound":{"isSyncAllowed":true},"\\u0075serSyncInbound":{"isSyncAllowed":false}}'),
    ("1", '{"userSyncInbound":{"isSyncAllowed":true,"isSyncAllowed":false}}'),
    ("2", '{"b2bCollaborationInbound":{"a":1,"a":2}}'),
    ("1", '{"UserSyncInbound":{"IsSyncAllowed":false}}'),
    ("1", '\ufeff{"userSyncInbound":{"isSyncAllowed":true}}'),
    ("1", '{"userSyncInbound":{"isSyncAllowed":true}} {}'),
    ("1", '{"userSyncInbound":{"isSyncAllowed":true}/*c*/}'),
    ("1", '{"displayName":"\\ud800"}'),
    ("2", '{"b2bCollaborationInbound":{"n":1e400}}'),
    ("2", '{"b2bCollaborationInbound":{"n":-0.0,"m":123456789012345678901234567890}}'),
    ("2", '{"b2bCollaborationInbound":' + "[" * 200 + "]" * 200 + "}"),
    ("2", '{"b2bCollaborationInbound":' + '{"a":' * 120 + "0" + "}" * 121),
    ("2", '{"b2bCollaborationInbound":{"x":[' + ",".join(["0"] * 500) + "]}}"),
    ("1", '{"displayName":"\x00"}'),
    ("1", b'{"displayName":"\xff"}'),
    ("9", json.dumps(sync)),  # application/json; charset=utf-8
    (")", json.dumps(sync)),  # application/json; charset=utf-16
    ("!", json.dumps(sync)),  # text/plain
    ("1", '{"@odata.context":"x","userSyncInbound":{"@odata.type":"#t","isSyncAllowed":true}}'),
    ("1", '{"userSyncInbound":{"@odata.id":"partners/x"}}'),
]
for selector, body in BODIES:
    if isinstance(body, str):
        body = body.encode("utf-8")
    write("body_reader", selector.encode() + body)

def batch(requests, selector="0", raw=None):
    body = raw if raw is not None else json.dumps({"requests": requests})
    write("batch_parser", selector + body)

def req(i, method, url, body=None, headers=None, **extra):
    r = {"id": str(i), "method": method, "url": url}
    if headers is not None:
        r["headers"] = headers
    if body is not None:
        r["body"] = body
        r.setdefault("headers", {})["Content-Type"] = "application/json"
    r.update(extra)
    return r

batch([req(1, "GET", "/users"), req(2, "GET", f"/{P}?$expand=identitySynchronization")])
batch([req(1, "PATCH", f"/{P}/{K}/identitySynchronization", sync)])
batch([req(1, "PUT", f"{P}/{K}/identitySynchronization", {"tenantId": K, **sync}),
       req(2, "GET", f"/{P}/{K}/identitySynchronization", dependsOn=["1"])], selector="1")
batch([req(1, "PATCH", f"/{P}/{K}/identitySynchronization",
           base64.b64encode(json.dumps(sync).encode()).decode())])
batch([req(1, "POST", f"https://graph.microsoft.com/v1.0/{P}", {"tenantId": K})])
batch([req(1, "DELETE", f"/v1.0/{P}/{K}")])
batch([req(1, "POST", f"/policies/deletedItems/crossTenantPartners/{K}/restore")], selector="1")
batch([req(1, "PATCH", f"/{TEMPLATE}", {"templateApplicationLevel": "none"})])
batch([req(1, "GET", "/me", headers={"X-HTTP-Method-Override": "PATCH"})])
batch([req(i, "GET", f"/users/{i}") for i in range(1, 21)])
batch([req(i, "GET", f"/users/{i}") for i in range(1, 23)])
batch([req(1, "GET", "/me", dependsOn=["2"]), req(2, "GET", "/me", dependsOn=["1"])])
batch([req(1, "GET", "/me"), req("a", "GET", "/me"), req("A", "GET", "/me")])
batch([{"id": 1, "method": "GET", "url": "/me"}])
batch([req(1, "PATCH", f"//host/{P}/{K}", sync)])
batch([req(1, "POST", "/$batch", {"requests": []})])
batch([req(1, "POST", "/%24batch", {"requests": []})])
# Issue 7's attack strings inside $batch.
for url in [f"x:/v1.0/{P}/{K}/identitySynchronization", f"https:v1.0/{P}/{K}/identitySynchronization",
            f"https:/v1.0/{P}/{K}/identitySynchronization", f" /v1.0/{P}/{K}/identitySynchronization",
            f"/v1.0/{P}/{K}/identity\tSynchronization", f"/v\r1.0/{P}/{K}/identitySynchronization",
            f"/v1.0/policies/cross\ntenantAccessPolicy/partners/{K}/identitySynchronization",
            f"/{P}/{K}/m365Capabilities", f"/{P}/{K}/serviceProviderConstraints",
            f"x:/v1.0/$batch", f"https:v1.0/$batch", f" /$batch", f"/\t$batch"]:
    batch([req(1, "PATCH", url, sync)])
for method in ["GET ", " GET", "GET\u00a0", "HEAD ", "get", "patch", "Patch"]:
    batch([req(1, method, f"/{P}/{K}", {"tenantId": K})])
batch(None, raw='{"requests":[{"id":"1","method":"GET","url":"/me"}],"requests":[{"id":"1","method":"PATCH","url":"/policies/crossTenantAccessPolicy/partners/%s"}]}' % K)
batch(None, raw='{"requests":[{"id":"1","method":"GET","method":"PATCH","url":"/policies/crossTenantAccessPolicy/partners/%s"}]}' % K)
batch(None, raw='{"Requests":[{"id":"1","method":"PATCH","url":"/policies/crossTenantAccessPolicy/partners/%s"}]}' % K)
batch(None, raw='{"requests":[{"id":"1","method":"PATCH","URL":"/policies/crossTenantAccessPolicy/partners/%s"}]}' % K)
batch(None, raw='{"requests":[{"id":"1","method":"GET","url":"/me","body":' + "[" * 200 + "]" * 200 + ',"headers":{"Content-Type":"application/json"}}]}')
batch(None, raw='{"requests":[' + "0," * 300 + '0]}')
batch(None, raw='{"requests":[{"id":"1","method":"GET","url":"/me"}]}', selector="4")
batch(None, raw='{"requests":[{"id":"1","method":"GET","url":"/me"}]}', selector="6")
print("seeds written", file=sys.stderr)
