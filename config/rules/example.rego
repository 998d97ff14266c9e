# An example syncgate policy: group sync may be enabled only by IdentityOps automation.
#
# Enabling group sync (beta `groupSyncInbound.isSyncAllowed: true`) provisions whole groups from a
# partner tenant. This policy lets only app-only callers whose app is named "IdentityOps…" turn it
# on; people signed in with a delegated token, and every other app, are refused.
#
# Use it from config/syncgate.toml:
#
#   [[rules.rego]]
#   id = "group-sync-automation"
#   file = "rules/example.rego"      # relative to the config file's folder
#   mode = "enforce"                 # or "warn" / "shadow" while trying it out
#   action = "deny"                  # or "require_approval"
#   # query = "data.syncgate.violations"   (the default)
#
# How syncgate runs it: the file is compiled once at start (and on SIGHUP); for every governed
# change syncgate evaluates `data.syncgate.violations` with the input document below. The answer
# is a set of violations, each {"message": "..."} (optionally with "rule": "<id>", which defaults
# to the entry's id) or a bare message string. An empty set means the change keeps the policy. A
# runtime error or a time-out (rules.rego_time_limit) counts as a violation: rules fail closed.
# Rego v1 syntax (`if`, `contains`); time, JWT and HTTP built-ins are not compiled in.
#
# The input document (the same for every rule; see `RuleInput` in src/rules/input.rs):
#
#   input.operation        "sync_create", "sync_update", "sync_delete", "partner_create",
#                          "partner_update", "partner_delete", "partner_restore", "sync_restore",
#                          "deleted_partner_purge", "deleted_sync_purge", "template_update", ...
#   input.method           "PUT", "PATCH", "POST", "DELETE"
#   input.canonical_path   "/beta/policies/crosstenantaccesspolicy/partners/<guid>/identitysynchronization"
#   input.api_version      "v1.0" or "beta"
#   input.partner          the partner tenant id (lower-case GUID), null for the MTO template
#   input.request_body     the request's JSON body, or null
#   input.before           the resource now (null when it does not exist); for partner_*
#                          operations the partner with its identitySynchronization expanded
#   input.expected_after   the resource if the change applies (PATCH: body merged onto before;
#                          PUT/POST: the body; DELETE: null; a restore: before, or null if unknown)
#   input.partner_state    the partner configuration before the change (with
#                          automaticUserConsentSettings); only when a rule asks for it
#                          (`needs_partner_state = true` on the entry), otherwise null
#   input.actor            the token's claims, decoded but not verified, and the connection:
#                          oid, upn, appid, app_displayname, tid, idtyp ("app" | "user" | null),
#                          roles [..], scp [..], caller_address, client_cert_subject, token_hmac
#   input.time             when the request arrived, RFC 3339 UTC ("2026-01-07T10:00:00Z")

package syncgate

import rego.v1

# The sync policy inside a document: partner operations carry it as `identitySynchronization`.
sync_policy(doc) := doc.identitySynchronization if startswith(input.operation, "partner_")

sync_policy(doc) := doc if not startswith(input.operation, "partner_")

group_sync_on(doc) if sync_policy(doc).groupSyncInbound.isSyncAllowed == true

# The change turns group sync on: on in the state it leaves, not on before.
enables_group_sync if {
	group_sync_on(input.expected_after)
	not group_sync_on(input.before)
}

# App-only tokens say `idtyp: app`; older ones have application `roles` and no delegated `scp`.
app_only if input.actor.idtyp == "app"

app_only if {
	input.actor.idtyp == null
	count(input.actor.scp) == 0
	count(input.actor.roles) > 0
}

# A null app_displayname makes startswith undefined, so such apps are not IdentityOps.
identity_ops if startswith(input.actor.app_displayname, "IdentityOps")

# Who is signed in, for the message.
caller := input.actor.upn if {
	input.actor.upn != null
} else := "a signed-in user"

violations contains {"message": msg} if {
	enables_group_sync
	not app_only
	msg := sprintf(
		"group sync may be enabled only by IdentityOps automation (an app-only token), not by %v",
		[caller],
	)
}

# %v, not %s: sprintf with a null argument for %s would be undefined, and an undefined message
# would silently drop the violation.
violations contains {"message": msg} if {
	enables_group_sync
	app_only
	not identity_ops
	msg := sprintf(
		"group sync may be enabled only by IdentityOps automation; app %v (%v) is not one",
		[input.actor.app_displayname, input.actor.appid],
	)
}
