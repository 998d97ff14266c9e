//! The rules engine: every built-in rule (pass and fail), modes and actions through `verdict()`,
//! load errors as a rule author sees them, versions, `expected_after`, and Rego.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::audit::Actor;
use crate::classify::OperationKind::{self, *};

const LISTED: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const UNLISTED: &str = "11111111-2222-3333-4444-555555555555";
const DENIED: &str = "dddddddd-0000-0000-0000-000000000001";
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const USER: &str = "bbbbbbbb-0000-0000-0000-000000000001";

/// A `[rules]` table inside a whole config file, as the lead's `RawConfig` reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rules: RawRules,
    /// The shipped example also configures the approval policy its rules name, and approvers.
    #[allow(dead_code)]
    #[serde(default)]
    approvals: Option<toml::Value>,
    #[allow(dead_code)]
    #[serde(default)]
    admin: Option<toml::Value>,
}

fn raw(toml_text: &str) -> RawRules {
    toml::from_str::<File>(toml_text)
        .unwrap_or_else(|e| panic!("{e}"))
        .rules
}

fn load(toml_text: &str) -> Result<RuleSet, RulesError> {
    RuleSet::load(&raw(toml_text), Path::new("."))
}

fn load_in(dir: &Path, toml_text: &str) -> Result<RuleSet, RulesError> {
    RuleSet::load(&raw(toml_text), dir)
}

fn rules(toml_text: &str) -> RuleSet {
    load(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(toml_text: &str) -> String {
    match load(toml_text) {
        Ok(_) => panic!("loaded, but should not have:\n{toml_text}"),
        Err(e) => e.to_string(),
    }
}

/// Wednesday 2026-01-07 10:00 UTC (11:00 in Zurich).
fn wednesday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 7, 10, 0, 0).unwrap()
}

fn delegated() -> Actor {
    Actor {
        oid: Some(USER.into()),
        upn: Some("alice@contoso.com".into()),
        appid: Some(APP.into()),
        idtyp: Some("user".into()),
        scp: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        ..Actor::default()
    }
}

fn app_only(appid: &str, name: &str) -> Actor {
    Actor {
        appid: Some(appid.into()),
        app_displayname: Some(name.into()),
        idtyp: Some("app".into()),
        roles: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        ..Actor::default()
    }
}

/// An input as the pipeline builds it: `expected_after` from the kind, before and body.
fn change(kind: OperationKind, partner: &str, before: Value, body: Option<Value>) -> RuleInput {
    let mut input = RuleInput::new(kind, wednesday());
    input.method = match kind {
        SyncCreate => "PUT",
        SyncUpdate | PartnerUpdate | TemplateUpdate => "PATCH",
        PartnerCreate | PartnerRestore | SyncRestore | TemplateReset => "POST",
        _ => "DELETE",
    }
    .into();
    input.api_version = "beta".into();
    input.partner = (!partner.is_empty()).then(|| partner.to_owned());
    input.expected_after = expected_after(kind, Some(&before), body.as_ref());
    input.before = Some(before);
    input.request_body = body;
    input.actor = delegated();
    input
}

fn enable(partner: &str) -> RuleInput {
    change(
        SyncCreate,
        partner,
        Value::Null,
        Some(json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}})),
    )
}

fn disable(partner: &str) -> RuleInput {
    change(
        SyncUpdate,
        partner,
        json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
        Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
    )
}

/// The one result of a single-rule set.
fn only(rules: &RuleSet, input: &RuleInput) -> RuleResult {
    let evaluation = rules.evaluate(input);
    assert_eq!(evaluation.results.len(), 1, "{:?}", evaluation.results);
    evaluation.results.into_iter().next().unwrap()
}

fn passes(rules: &RuleSet, input: &RuleInput) {
    let r = only(rules, input);
    assert!(r.passed, "expected a pass: {r:?}");
    assert_eq!(r.message, None);
}

/// Fails, and the message holds every one of `needles`.
fn fails(rules: &RuleSet, input: &RuleInput, needles: &[&str]) -> String {
    let r = only(rules, input);
    assert!(!r.passed, "expected a failure for {input:?}");
    let message = r.message.unwrap();
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    message
}

const ALLOWLIST: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [{ tenant_id = "9C5D131D-B1C3-4FC4-9E3F-C6557947D551", display_name = "Fabrikam" }]
"#;

// ---- partner_allowlist ----------------------------------------------------------------------

#[test]
fn enabling_sync_for_a_listed_partner_passes_and_for_an_unlisted_one_fails() {
    let r = rules(ALLOWLIST);
    passes(&r, &enable(LISTED));
    let message = fails(
        &r,
        &enable(UNLISTED),
        &[UNLISTED, "not on the sync allow-list"],
    );
    assert!(
        message.starts_with("rule 'sync-allowlist': partner"),
        "{message}"
    );
    assert!(message.contains("userSyncInbound"), "{message}");
}

#[test]
fn disabled_or_deleted_sync_needs_no_allow_list_entry() {
    let r = rules(ALLOWLIST);
    passes(&r, &disable(UNLISTED));
    let create_disabled = change(
        SyncCreate,
        UNLISTED,
        Value::Null,
        Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
    );
    passes(&r, &create_disabled);
    let enabled = json!({"userSyncInbound": {"isSyncAllowed": true}});
    passes(&r, &change(SyncDelete, UNLISTED, enabled, None));
}

#[test]
fn a_patch_that_leaves_an_unlisted_partner_enabled_fails() {
    let r = rules(ALLOWLIST);
    let input = change(
        SyncUpdate,
        UNLISTED,
        json!({"displayName": "x", "userSyncInbound": {"isSyncAllowed": true}}),
        Some(json!({"displayName": "y"})),
    );
    fails(&r, &input, &["not on the sync allow-list"]);
}

#[test]
fn beta_group_sync_counts_as_enabling_sync() {
    let r = rules(ALLOWLIST);
    let input = change(
        SyncUpdate,
        UNLISTED,
        json!({"userSyncInbound": {"isSyncAllowed": false}, "groupSyncInbound": null}),
        Some(json!({"groupSyncInbound": {"isSyncAllowed": true}})),
    );
    fails(
        &r,
        &input,
        &["groupSyncInbound.isSyncAllowed may be true only"],
    );
}

#[test]
fn a_partner_write_embedding_an_enabled_sync_policy_is_checked() {
    let r = rules(ALLOWLIST);
    let body = json!({
        "tenantId": UNLISTED,
        "identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true}}
    });
    fails(
        &r,
        &change(PartnerCreate, UNLISTED, Value::Null, Some(body)),
        &["not on the sync allow-list"],
    );
    let before = json!({"tenantId": UNLISTED, "identitySynchronization": null});
    let patch = json!({"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true}}});
    fails(
        &r,
        &change(PartnerUpdate, UNLISTED, before.clone(), Some(patch)),
        &[UNLISTED],
    );
    // A partner PATCH about something else passes, even when sync was enabled some other way.
    let b2b = json!({"b2bCollaborationInbound": null});
    passes(
        &r,
        &change(PartnerUpdate, UNLISTED, before, Some(b2b.clone())),
    );
    let enabled = json!({"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true}}});
    passes(
        &r,
        &change(PartnerUpdate, UNLISTED, enabled.clone(), Some(b2b)),
    );
    // ...but one that touches the sync policy and leaves it enabled does not.
    let rename = json!({"identitySynchronization": {"displayName": "x"}});
    fails(
        &r,
        &change(PartnerUpdate, UNLISTED, enabled, Some(rename)),
        &[UNLISTED],
    );
}

#[test]
fn restoring_a_sync_policy_fails_closed_for_unlisted_partners() {
    let r = rules(ALLOWLIST);
    // The pipeline cannot see what the restore brings back: unknown.
    let unknown = change(SyncRestore, UNLISTED, Value::Null, None);
    assert_eq!(unknown.expected_after, None);
    fails(
        &r,
        &unknown,
        &["cannot tell whether the restored sync policy"],
    );
    passes(&r, &change(SyncRestore, LISTED, Value::Null, None));
    // When it could read the deleted item, that decides.
    let mut known = unknown.clone();
    known.expected_after = Some(json!({"userSyncInbound": {"isSyncAllowed": false}}));
    passes(&r, &known);
    known.expected_after = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
    fails(&r, &known, &["not on the sync allow-list"]);
    // Restoring a partner does not restore its sync policy.
    passes(&r, &change(PartnerRestore, UNLISTED, Value::Null, None));
}

#[test]
fn the_mto_template_may_enable_sync_only_when_the_allow_list_says_so() {
    let template_on = |rules: &RuleSet| {
        let input = change(
            TemplateUpdate,
            "",
            json!({"templateApplicationLevel": "newPartners", "userSyncInbound": null}),
            Some(json!({"userSyncInbound": {"isSyncAllowed": true}})),
        );
        rules.evaluate(&input).results[0].clone()
    };
    let strict = rules(ALLOWLIST);
    let r = template_on(&strict);
    assert!(!r.passed);
    assert!(r.message.unwrap().contains("MTO sync template"));
    let lenient = rules(&format!("{ALLOWLIST}allow_template = true\n"));
    assert!(template_on(&lenient).passed);
    // Resetting or disabling the template is always fine.
    passes(&strict, &change(TemplateReset, "", json!({}), None));
    let off = change(
        TemplateUpdate,
        "",
        json!({"userSyncInbound": {"isSyncAllowed": true}}),
        Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
    );
    passes(&strict, &off);
}

// ---- partner_denylist -----------------------------------------------------------------------

const DENYLIST: &str = r#"
[[rules.builtin]]
id = "never"
type = "partner_denylist"
tenants = ["DDDDDDDD-0000-0000-0000-000000000001"]
"#;

#[test]
fn a_denied_tenant_can_never_get_a_sync_policy_or_partner() {
    let r = rules(DENYLIST);
    let create_disabled = change(
        SyncCreate,
        DENIED,
        Value::Null,
        Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
    );
    fails(&r, &create_disabled, &[DENIED, "deny-list", "sync_create"]);
    let partner = change(
        PartnerCreate,
        DENIED,
        Value::Null,
        Some(json!({"tenantId": DENIED})),
    );
    fails(&r, &partner, &["partner_create"]);
    fails(
        &r,
        &change(SyncRestore, DENIED, Value::Null, None),
        &["sync_restore"],
    );
    let embedded_disabled = change(
        PartnerUpdate,
        DENIED,
        json!({"identitySynchronization": null}),
        Some(json!({"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": false}}})),
    );
    fails(&r, &embedded_disabled, &["partner_update"]);
    let unrelated = change(
        PartnerUpdate,
        DENIED,
        json!({}),
        Some(json!({"b2bCollaborationInbound": null})),
    );
    passes(&r, &unrelated);
    fails(&r, &enable(DENIED), &["deny-list"]);
    passes(&r, &enable(LISTED));
}

#[test]
fn a_denied_tenant_may_still_be_disabled_and_removed() {
    let r = rules(DENYLIST);
    passes(&r, &disable(DENIED));
    let enabled = json!({"userSyncInbound": {"isSyncAllowed": true}});
    passes(&r, &change(SyncDelete, DENIED, enabled, None));
    passes(&r, &change(PartnerDelete, DENIED, json!({}), None));
    passes(&r, &change(DeletedSyncPurge, DENIED, json!({}), None));
}

// ---- display_name ---------------------------------------------------------------------------

fn display_name_rules() -> RuleSet {
    rules(&format!(
        r#"{ALLOWLIST}
[[rules.builtin]]
id = "names"
type = "display_name"
allowlist = "sync-allowlist"
"#
    ))
}

fn named(kind: OperationKind, partner: &str, before: Value, body: Value) -> RuleResult {
    display_name_rules()
        .evaluate(&change(kind, partner, before, Some(body)))
        .results[1]
        .clone()
}

#[test]
fn the_display_name_must_be_the_allow_lists_name_exactly() {
    let ok = named(
        SyncCreate,
        LISTED,
        Value::Null,
        json!({"displayName": "Fabrikam"}),
    );
    assert!(ok.passed, "{ok:?}");
    let wrong = named(
        SyncCreate,
        LISTED,
        Value::Null,
        json!({"displayName": "fabrikam"}),
    );
    let message = wrong.message.unwrap();
    assert!(
        message.starts_with("rule 'names': displayName \"fabrikam\""),
        "{message}"
    );
    assert!(message.contains("set it to \"Fabrikam\""), "{message}");
    let missing = named(
        SyncCreate,
        LISTED,
        Value::Null,
        json!({"userSyncInbound": null}),
    );
    assert!(missing.message.unwrap().contains("needs a displayName"));
    let blank = named(
        SyncCreate,
        LISTED,
        Value::Null,
        json!({"displayName": "  "}),
    );
    assert!(!blank.passed);
}

#[test]
fn a_patch_is_judged_on_the_name_it_leaves() {
    let before = json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": false}});
    let untouched = json!({"userSyncInbound": {"isSyncAllowed": true}});
    assert!(named(SyncUpdate, LISTED, before.clone(), untouched).passed);
    let cleared = json!({"displayName": null});
    assert!(!named(SyncUpdate, LISTED, before, cleared).passed);
}

#[test]
fn unlisted_partners_only_need_a_non_empty_name() {
    assert!(
        named(
            SyncCreate,
            UNLISTED,
            Value::Null,
            json!({"displayName": "Other"})
        )
        .passed
    );
    let r = named(
        SyncCreate,
        UNLISTED,
        Value::Null,
        json!({"displayName": ""}),
    );
    assert!(r.message.unwrap().contains("non-empty displayName"));
}

#[test]
fn partner_writes_are_checked_only_when_they_carry_a_sync_policy() {
    let r = named(
        PartnerUpdate,
        LISTED,
        json!({"identitySynchronization": null}),
        json!({"identitySynchronization": {"displayName": "Wrong"}}),
    );
    assert!(!r.passed);
    let r = named(
        PartnerUpdate,
        LISTED,
        json!({"identitySynchronization": null}),
        json!({"automaticUserConsentSettings": {"inboundAllowed": true}}),
    );
    assert!(r.passed);
}

// ---- change_window --------------------------------------------------------------------------

const WINDOW: &str = r#"
[[rules.builtin]]
id = "business-hours"
type = "change_window"
time_zone = "Europe/Zurich"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "08:00-18:00"
"#;

#[test]
fn changes_outside_the_window_fail_naming_the_window_and_local_time() {
    let r = rules(WINDOW);
    let mut input = disable(LISTED);
    passes(&r, &input);
    input.time = Utc.with_ymd_and_hms(2026, 1, 10, 9, 15, 0).unwrap(); // Saturday
    fails(
        &r,
        &input,
        &[
            "business-hours",
            "Mon, Tue, Wed, Thu, Fri 08:00-18:00 Europe/Zurich",
            "it is Sat 2026-01-10 10:15 there",
        ],
    );
}

#[test]
fn a_window_with_operations_applies_only_to_them() {
    let r = rules(&format!("{WINDOW}operations = [\"sync_delete\"]\n"));
    let mut update = disable(LISTED);
    update.time = Utc.with_ymd_and_hms(2026, 1, 10, 9, 15, 0).unwrap();
    passes(&r, &update);
    let mut delete = change(SyncDelete, LISTED, json!({}), None);
    delete.time = update.time;
    fails(&r, &delete, &["sync_delete changes are allowed only"]);
}

// ---- allowed_actors -------------------------------------------------------------------------

fn actors_rules(extra: &str) -> RuleSet {
    rules(&format!(
        r#"
[[rules.builtin]]
id = "who"
type = "allowed_actors"
app_ids = ["AAAAAAAA-0000-0000-0000-000000000009"]
user_oids = ["{USER}"]
upn_patterns = ["*@Contoso.com"]
{extra}
"#
    ))
}

fn as_actor(actor: Actor) -> RuleInput {
    let mut input = disable(LISTED);
    input.actor = actor;
    input
}

#[test]
fn a_caller_must_match_an_app_a_user_or_a_upn_pattern() {
    let r = actors_rules("");
    // Listed app, app-only.
    passes(
        &r,
        &as_actor(app_only("aaaaaaaa-0000-0000-0000-000000000009", "x")),
    );
    // Listed user oid (via any app).
    passes(
        &r,
        &as_actor(Actor {
            upn: None,
            ..delegated()
        }),
    );
    // UPN pattern, case-insensitive.
    passes(
        &r,
        &as_actor(Actor {
            oid: Some("cccccccc-0000-0000-0000-000000000001".into()),
            upn: Some("Bob@CONTOSO.com".into()),
            ..delegated()
        }),
    );
    let stranger = Actor {
        oid: Some("cccccccc-0000-0000-0000-000000000001".into()),
        upn: Some("mallory@contoso.com.evil.example".into()),
        ..delegated()
    };
    fails(
        &r,
        &as_actor(stranger),
        &[
            "user mallory@contoso.com.evil.example",
            "may not make sync_update changes",
        ],
    );
    // An app-only token is matched by its app id alone.
    fails(&r, &as_actor(app_only(APP, "Other")), &["app-only token"]);
}

#[test]
fn app_only_tokens_can_be_forbidden_outright() {
    let r = actors_rules("allow_app_only = false");
    fails(
        &r,
        &as_actor(app_only("aaaaaaaa-0000-0000-0000-000000000009", "x")),
        &["app-only tokens may not make sync_update changes"],
    );
    passes(&r, &as_actor(delegated()));
    // Old tokens without idtyp: roles and no scp make it app-only.
    let legacy = Actor {
        idtyp: None,
        ..app_only("aaaaaaaa-0000-0000-0000-000000000009", "x")
    };
    fails(&r, &as_actor(legacy), &["app-only"]);
}

#[test]
fn allowed_actors_can_be_scoped_to_operations() {
    let r = actors_rules("operations = [\"sync_delete\"]");
    passes(&r, &as_actor(app_only(APP, "Other")));
    let mut delete = change(SyncDelete, LISTED, json!({}), None);
    delete.actor = app_only(APP, "Other");
    fails(&r, &delete, &["sync_delete"]);
}

// ---- required_permission --------------------------------------------------------------------

#[test]
fn the_token_must_carry_the_permission_in_scp_or_roles() {
    let r = rules("[[rules.builtin]]\nid = \"perm\"\ntype = \"required_permission\"\n");
    passes(&r, &as_actor(delegated()));
    passes(&r, &as_actor(app_only(APP, "x")));
    let weak = Actor {
        scp: vec!["Policy.Read.All".into()],
        ..delegated()
    };
    fails(
        &r,
        &as_actor(weak),
        &[
            "does not carry Policy.ReadWrite.CrossTenantAccess",
            "it carries Policy.Read.All",
        ],
    );
    fails(
        &r,
        &as_actor(Actor::default()),
        &["it carries no permissions"],
    );
    let custom = rules(
        "[[rules.builtin]]\nid = \"perm\"\ntype = \"required_permission\"\npermission = \"Policy.ReadWrite.All\"\n",
    );
    fails(&custom, &as_actor(delegated()), &["Policy.ReadWrite.All"]);
}

// ---- forbid_operations ----------------------------------------------------------------------

#[test]
fn forbidden_operations_are_refused_outright() {
    let r = rules(
        "[[rules.builtin]]\nid = \"no-deletes\"\ntype = \"forbid_operations\"\noperations = [\"sync_delete\", \"partner_restore\"]\n",
    );
    fails(
        &r,
        &change(SyncDelete, LISTED, json!({}), None),
        &["rule 'no-deletes': sync_delete operations are forbidden"],
    );
    fails(
        &r,
        &change(PartnerRestore, LISTED, Value::Null, None),
        &["partner_restore"],
    );
    passes(&r, &disable(LISTED));
}

// ---- inbound_sync_requires_consent ----------------------------------------------------------

const CONSENT: &str =
    "[[rules.builtin]]\nid = \"consent-first\"\ntype = \"inbound_sync_requires_consent\"\n";

fn with_consent(mut input: RuleInput, state: Option<Value>) -> RuleInput {
    input.partner_state = state;
    input
}

#[test]
fn enabling_inbound_sync_needs_inbound_consent_already_on() {
    let r = rules(CONSENT);
    assert!(r.needs_partner_state());
    let on =
        json!({"automaticUserConsentSettings": {"inboundAllowed": true, "outboundAllowed": null}});
    passes(&r, &with_consent(enable(LISTED), Some(on)));
    let off = json!({"automaticUserConsentSettings": {"inboundAllowed": null}});
    fails(
        &r,
        &with_consent(enable(LISTED), Some(off)),
        &["inboundAllowed = null", "to true first (a separate PATCH"],
    );
    fails(
        &r,
        &with_consent(enable(LISTED), None),
        &["could not read partner", "automaticUserConsentSettings"],
    );
    fails(
        &r,
        &with_consent(enable(LISTED), Some(Value::Null)),
        &["has no partner configuration"],
    );
}

#[test]
fn consent_is_checked_only_when_sync_becomes_enabled() {
    let r = rules(CONSENT);
    passes(&r, &with_consent(disable(LISTED), None));
    // Already enabled: renaming it does not re-check consent.
    let rename = change(
        SyncUpdate,
        LISTED,
        json!({"userSyncInbound": {"isSyncAllowed": true}}),
        Some(json!({"displayName": "x"})),
    );
    passes(&r, &with_consent(rename, None));
    // One partner PATCH turning both on is not "already".
    let both = change(
        PartnerUpdate,
        LISTED,
        json!({"automaticUserConsentSettings": {"inboundAllowed": false}, "identitySynchronization": null}),
        Some(json!({
            "automaticUserConsentSettings": {"inboundAllowed": true},
            "identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true}}
        })),
    );
    let state = both.before.clone();
    fails(&r, &with_consent(both, state), &["inboundAllowed = false"]);
    assert!(!rules(ALLOWLIST).needs_partner_state());
}

// ---- modes, actions, verdict ----------------------------------------------------------------

fn moded(mode: &str, action: &str) -> RuleSet {
    rules(&format!(
        "{ALLOWLIST}mode = \"{mode}\"\naction = \"{action}\"\n"
    ))
}

#[test]
fn enforce_deny_refuses_with_the_failing_result() {
    let evaluation = moded("enforce", "deny").evaluate(&enable(UNLISTED));
    match evaluation.verdict() {
        Verdict::Deny(r) => {
            assert_eq!(r.rule, "sync-allowlist");
            assert_eq!(r.kind, "partner_allowlist");
            assert_eq!((r.mode, r.action), (Mode::Enforce, Action::Deny));
        }
        other => panic!("{other:?}"),
    }
    let allowed = moded("enforce", "deny").evaluate(&enable(LISTED)).verdict();
    assert_eq!(allowed, Verdict::Allow { warnings: vec![] });
}

#[test]
fn enforce_require_approval_asks_for_approval() {
    let verdict = moded("enforce", "require_approval")
        .evaluate(&enable(UNLISTED))
        .verdict();
    assert!(
        matches!(&verdict, Verdict::NeedsApproval(r) if r.action == Action::RequireApproval),
        "{verdict:?}"
    );
}

#[test]
fn warn_allows_with_a_warning_and_shadow_allows_silently() {
    for action in ["deny", "require_approval"] {
        match moded("warn", action).evaluate(&enable(UNLISTED)).verdict() {
            Verdict::Allow { warnings } => {
                assert_eq!(warnings.len(), 1);
                assert!(warnings[0].message.as_deref().unwrap().contains(UNLISTED));
            }
            other => panic!("{other:?}"),
        }
        let shadow = moded("shadow", action).evaluate(&enable(UNLISTED));
        assert_eq!(shadow.verdict(), Verdict::Allow { warnings: vec![] });
        assert!(
            !shadow.results[0].passed,
            "shadow results are still recorded"
        );
    }
}

#[test]
fn a_denial_wins_over_an_approval_wherever_it_is() {
    let r = rules(&format!(
        "{ALLOWLIST}action = \"require_approval\"\n{DENYLIST}\n{WINDOW}mode = \"warn\"\n"
    ));
    let mut input = enable(DENIED);
    input.time = Utc.with_ymd_and_hms(2026, 1, 10, 9, 15, 0).unwrap();
    let evaluation = r.evaluate(&input);
    assert_eq!(evaluation.violations().count(), 3);
    match evaluation.verdict() {
        Verdict::Deny(r) => assert_eq!(r.rule, "never"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn results_json_is_what_the_audit_event_records() {
    let evaluation = rules(ALLOWLIST).evaluate(&enable(UNLISTED));
    let json = evaluation.results_json();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["rule"], "sync-allowlist");
    assert_eq!(json[0]["kind"], "partner_allowlist");
    assert_eq!(json[0]["mode"], "enforce");
    assert_eq!(json[0]["action"], "deny");
    assert_eq!(json[0]["passed"], false);
    assert!(json[0]["message"].as_str().unwrap().contains(UNLISTED));
    assert_eq!(evaluation.version, rules(ALLOWLIST).version());
}

#[test]
fn no_rules_allow_everything() {
    let empty = RuleSet::empty();
    assert!(empty.is_empty());
    let evaluation = empty.evaluate(&enable(UNLISTED));
    assert!(evaluation.results.is_empty());
    assert_eq!(evaluation.verdict(), Verdict::Allow { warnings: vec![] });
    assert!(!empty.needs_partner_state());
}

#[test]
fn unknown_operation_names_in_a_hand_written_input_do_not_panic() {
    let r = rules(&format!(
        "{ALLOWLIST}{DENYLIST}{WINDOW}[[rules.builtin]]\nid = \"f\"\ntype = \"forbid_operations\"\noperations = [\"sync_delete\"]\n"
    ));
    let mut input = enable(UNLISTED);
    input.operation = "sync_upsert".into();
    let evaluation = r.evaluate(&input);
    assert_eq!(evaluation.results.len(), 4);
    assert!(!evaluation.results[0].passed, "content rules still apply");
}

// ---- load errors ----------------------------------------------------------------------------

#[test]
fn unknown_keys_fail_at_parse_time_with_their_position() {
    let err = toml::from_str::<File>(
        "[[rules.builtin]]\nid = \"a\"\ntype = \"partner_denylist\"\ntenants = []\n\n[[rules.builtin]]\nid = \"b\"\ntype = \"change_window\"\ntenant = 1\n",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("line 9"), "{err}");
    assert!(err.contains("unknown field `tenant`"), "{err}");
    let err = toml::from_str::<File>("[rules]\nrego_timelimit = \"1s\"\n")
        .err()
        .unwrap();
    assert!(err.to_string().contains("unknown field `rego_timelimit`"));
    let err =
        toml::from_str::<File>("[[rules.builtin]]\nid = \"a\"\ntype = \"partner_alowlist\"\n")
            .err()
            .unwrap();
    assert!(
        err.to_string()
            .contains("unknown variant `partner_alowlist`"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_type_is_refused_naming_the_entry() {
    let err = load_error(&format!("{WINDOW}partners = []\n"));
    assert_eq!(
        err,
        "rules.builtin[0] (id \"business-hours\"): `partners` does not apply to a change_window \
         rule (it takes: time_zone, days, hours, operations)"
    );
}

#[test]
fn ids_must_be_present_plain_and_unique_across_builtin_and_rego() {
    let err = load_error(&format!("{ALLOWLIST}{ALLOWLIST}"));
    assert!(
        err.starts_with("rules.builtin[1] (id \"sync-allowlist\"): id \"sync-allowlist\" is used"),
        "{err}"
    );
    let err =
        load_error("[[rules.builtin]]\nid = \"\"\ntype = \"inbound_sync_requires_consent\"\n");
    assert!(err.ends_with("id is empty"), "{err}");
    let err =
        load_error("[[rules.builtin]]\nid = \"a b\"\ntype = \"inbound_sync_requires_consent\"\n");
    assert!(err.contains("may hold only letters"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package syncgate\nviolations := []\n",
    )
    .unwrap();
    let err = load_in(
        dir.path(),
        &format!("{ALLOWLIST}[[rules.rego]]\nid = \"sync-allowlist\"\nfile = \"p.rego\"\n"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("rules.rego[0] (id \"sync-allowlist\")"),
        "{err}"
    );
}

#[test]
fn tenant_and_object_ids_must_be_guids() {
    let err = load_error(
        "[[rules.builtin]]\nid = \"l\"\ntype = \"partner_allowlist\"\npartners = [\n  { tenant_id = \"9c5d131d-b1c3-4fc4-9e3f-c6557947d551\", display_name = \"A\" },\n  { tenant_id = \"contoso.com\", display_name = \"B\" },\n]\n",
    );
    assert_eq!(
        err,
        "rules.builtin[0] (id \"l\"): partners[1].tenant_id: \"contoso.com\" is not a GUID \
         (36-character hyphenated form)"
    );
    let err = load_error(
        "[[rules.builtin]]\nid = \"d\"\ntype = \"partner_denylist\"\ntenants = [\"x\"]\n",
    );
    assert!(err.contains("tenants[0]: \"x\" is not a GUID"), "{err}");
    let err = load_error(
        "[[rules.builtin]]\nid = \"w\"\ntype = \"allowed_actors\"\napp_ids = [\"nope\"]\n",
    );
    assert!(err.contains("app_ids[0]"), "{err}");
    let err = load_error(&format!(
        "[[rules.builtin]]\nid = \"l\"\ntype = \"partner_allowlist\"\npartners = [{{ tenant_id = \"{LISTED}\", display_name = \"A\" }}, {{ tenant_id = \"{}\", display_name = \"B\" }}]\n",
        LISTED.to_uppercase()
    ));
    assert!(err.contains("listed twice"), "{err}");
    let err = load_error(&format!(
        "[[rules.builtin]]\nid = \"l\"\ntype = \"partner_allowlist\"\npartners = [{{ tenant_id = \"{LISTED}\", display_name = \"\" }}]\n"
    ));
    assert!(err.contains("partners[0].display_name is empty"), "{err}");
}

#[test]
fn bad_time_zones_and_hours_are_named() {
    let err = load_error(&WINDOW.replace("Europe/Zurich", "Europe/Zurch"));
    assert!(
        err.starts_with(
            "rules.builtin[0] (id \"business-hours\"): unknown time zone \"Europe/Zurch\""
        ),
        "{err}"
    );
    let err = load_error(&WINDOW.replace("08:00-18:00", "18:00-08:00"));
    assert!(err.contains("hours \"18:00-08:00\""), "{err}");
    assert!(err.contains("across midnight"), "{err}");
    let err = load_error(&WINDOW.replace("\"mon\"", "\"monday\""));
    assert!(err.contains("unknown day \"monday\""), "{err}");
    let err = load_error(
        "[[rules.builtin]]\nid = \"w\"\ntype = \"change_window\"\ndays = [\"mon\"]\nhours = \"08:00-18:00\"\n",
    );
    assert!(err.contains("needs time_zone"), "{err}");
}

#[test]
fn unknown_operation_names_fail_listing_the_valid_ones() {
    let err = load_error(
        "[[rules.builtin]]\nid = \"f\"\ntype = \"forbid_operations\"\noperations = [\"sync_delet\"]\n",
    );
    assert!(err.contains("unknown operation \"sync_delet\""), "{err}");
    assert!(
        err.contains("valid names: sync_create, sync_update, sync_delete"),
        "{err}"
    );
    let err = load_error(&format!("{WINDOW}operations = [\"delete\"]\n"));
    assert!(err.contains("unknown operation \"delete\""), "{err}");
    let err = load_error(
        "[[rules.builtin]]\nid = \"f\"\ntype = \"forbid_operations\"\noperations = []\n",
    );
    assert!(err.contains("operations is empty"), "{err}");
}

#[test]
fn the_display_name_rule_must_name_a_partner_allowlist() {
    let err = load_error(
        "[[rules.builtin]]\nid = \"n\"\ntype = \"display_name\"\nallowlist = \"sync-alowlist\"\n",
    );
    assert!(
        err.contains("allowlist \"sync-alowlist\" names no rule (partner_allowlist rules: none)"),
        "{err}"
    );
    let err = load_error(&format!(
        "{WINDOW}[[rules.builtin]]\nid = \"n\"\ntype = \"display_name\"\nallowlist = \"business-hours\"\n"
    ));
    assert!(
        err.contains("is a change_window rule, not a partner_allowlist"),
        "{err}"
    );
    // The allow-list may come after the display_name rule.
    rules(&format!(
        "[[rules.builtin]]\nid = \"n\"\ntype = \"display_name\"\nallowlist = \"sync-allowlist\"\n{ALLOWLIST}"
    ));
}

#[test]
fn an_allowed_actors_rule_must_allow_someone() {
    let err = load_error(
        "[[rules.builtin]]\nid = \"w\"\ntype = \"allowed_actors\"\nallow_app_only = false\n",
    );
    assert!(err.contains("would refuse every caller"), "{err}");
}

#[test]
fn a_bad_rego_time_limit_is_named() {
    let err = load_error("[rules]\nrego_time_limit = \"fast\"\n");
    assert!(err.starts_with("rules: rules.rego_time_limit"), "{err}");
}

// ---- Rego -----------------------------------------------------------------------------------

fn rego_rules(policy: &str, entry_extra: &str) -> Result<RuleSet, RulesError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), policy).unwrap();
    load_in(
        dir.path(),
        &format!("[[rules.rego]]\nid = \"custom\"\nfile = \"policy.rego\"\n{entry_extra}"),
    )
}

const POLICY: &str = r#"package syncgate

violations contains {"message": "no PUT on weekends"} if input.method == "PUT"
violations contains "bare message" if input.partner == "11111111-2222-3333-4444-555555555555"
violations contains {"rule": "named", "message": sprintf("partner %v", [input.partner])} if {
	input.request_body.displayName == "Evil"
}
"#;

#[test]
fn rego_violations_become_failing_results_with_the_entrys_mode_and_action() {
    let r = rego_rules(POLICY, "mode = \"warn\"\naction = \"require_approval\"\n").unwrap();
    passes(&r, &disable(LISTED));
    let mut input = enable(UNLISTED);
    input.request_body = Some(json!({"displayName": "Evil"}));
    let evaluation = r.evaluate(&input);
    let got: Vec<(&str, &str)> = evaluation
        .results
        .iter()
        .map(|r| (r.rule.as_str(), r.message.as_deref().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            // Sets are ordered by value, so the order is stable from run to run.
            ("custom", "rule 'custom': bare message"),
            ("custom", "rule 'custom': no PUT on weekends"),
            (
                "named",
                "rule 'named': partner 11111111-2222-3333-4444-555555555555"
            ),
        ]
    );
    assert!(evaluation.results.iter().all(|r| r.kind == "rego"
        && r.mode == Mode::Warn
        && r.action == Action::RequireApproval
        && !r.passed));
    assert!(matches!(evaluation.verdict(), Verdict::Allow { warnings } if warnings.len() == 3));
}

#[test]
fn rego_runtime_errors_fail_closed() {
    // Divides by zero for tokens without roles, but only on PUT (the load-time probe is a PATCH).
    let policy = "package syncgate\n\nviolations contains \"x\" if input.method == \"GET\"\n\nratio := 1 / count(input.actor.roles) if input.method == \"PUT\"\n\nviolations contains \"y\" if ratio > 5\n";
    let r = rego_rules(policy, "").unwrap();
    let result = only(&r, &enable(LISTED));
    assert!(!result.passed);
    let message = result.message.unwrap();
    assert!(
        message.starts_with("rule 'custom': evaluation failed: "),
        "{message}"
    );
    assert!(message.contains("policy.rego:5:"), "{message}");
    assert!(message.contains("divide by zero"), "{message}");
    assert!(matches!(
        r.evaluate(&enable(LISTED)).verdict(),
        Verdict::Deny(_)
    ));
    passes(&r, &disable(LISTED));
    // The same bug on every input is caught at load.
    let err = rego_rules(&policy.replace(" if input.method == \"PUT\"", ""), "")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("failed on a sample input"), "{err}");
    assert!(err.contains("divide by zero"), "{err}");
}

#[test]
fn a_rego_policy_that_runs_too_long_fails_closed() {
    let slow =
        "\tsome i in numbers.range(1, 200000)\n\tsome j in numbers.range(1, 200000)\n\ti + j < 0\n";
    let dir = tempfile::tempdir().unwrap();
    let config = "[rules]\nrego_time_limit = \"20ms\"\n\n[[rules.rego]]\nid = \"slow\"\nfile = \"slow.rego\"\n";
    // Slow only for PUT: the load-time probe (a PATCH) passes, a PUT runs into the limit.
    std::fs::write(
        dir.path().join("slow.rego"),
        format!("package syncgate\n\nviolations contains \"never\" if {{\n\tinput.method == \"PUT\"\n{slow}}}\n"),
    )
    .unwrap();
    let r = load_in(dir.path(), config).unwrap();
    let message = only(&r, &enable(LISTED)).message.unwrap();
    assert!(message.contains("evaluation failed"), "{message}");
    assert!(message.contains("time limit"), "{message}");
    passes(&r, &disable(LISTED));
    // Slow for every input: the file cannot even be loaded.
    std::fs::write(
        dir.path().join("slow.rego"),
        format!("package syncgate\n\nviolations contains \"never\" if {{\n{slow}}}\n"),
    )
    .unwrap();
    let err = load_in(dir.path(), config).err().unwrap().to_string();
    assert!(err.contains("time limit"), "{err}");
}

#[test]
fn a_rego_answer_of_the_wrong_shape_fails_closed() {
    let policy = "package syncgate\n\nviolations contains 42 if input.method == \"PUT\"\n";
    let r = rego_rules(policy, "").unwrap();
    let message = only(&r, &enable(LISTED)).message.unwrap();
    assert!(message.contains("violation 42 is neither"), "{message}");
}

#[test]
fn rego_syntax_errors_name_the_file_line_and_column() {
    let err = rego_rules(
        "package syncgate\n\nviolations contains v if {\n  input.a ==\n}\n",
        "",
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("rules.rego[0] (id \"custom\"): "),
        "{text}"
    );
    assert!(
        text.contains("policy.rego:5:1: expecting expression"),
        "{text}"
    );
    assert!(matches!(err, RulesError::Rego { .. }));
}

#[test]
fn a_missing_rego_file_is_named() {
    let err = load("[[rules.rego]]\nid = \"gone\"\nfile = \"no/such/file.rego\"\n")
        .err()
        .unwrap();
    assert!(matches!(err, RulesError::ReadPolicy { .. }));
    assert_eq!(
        err.to_string(),
        "rules.rego[0] (id \"gone\"): cannot read ./no/such/file.rego"
    );
}

#[test]
fn a_query_naming_no_rule_of_the_file_fails_at_load() {
    let err = rego_rules(POLICY, "query = \"data.sncgate.violations\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("query data.sncgate.violations"), "{err}");
    assert!(err.contains("failed on a sample input"), "{err}");
    let err = rego_rules("package syncgate\n\nviolations := 3\n", "")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("must answer a set or array of violations, not a number"),
        "{err}"
    );
    let err = rego_rules(POLICY, "query = \"violations\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("must be a rule path starting with \"data.\""),
        "{err}"
    );
}

#[test]
fn a_rego_entry_can_ask_for_the_partner_state() {
    let policy = "package syncgate\n\nviolations contains \"no consent\" if not input.partner_state.automaticUserConsentSettings.inboundAllowed\n";
    let r = rego_rules(policy, "needs_partner_state = true\n").unwrap();
    assert!(r.needs_partner_state());
    assert!(!only(&r, &enable(LISTED)).passed);
    let state = json!({"automaticUserConsentSettings": {"inboundAllowed": true}});
    passes(&r, &with_consent(enable(LISTED), Some(state)));
}

#[test]
fn the_shipped_example_policy_loads_and_guards_group_sync() {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let raw =
        raw("[[rules.rego]]\nid = \"group-sync-automation\"\nfile = \"rules/example.rego\"\n");
    let r = RuleSet::load(&raw, &config_dir).unwrap_or_else(|e| panic!("{e}"));
    let group_on = |actor: Actor| {
        let mut input = change(
            SyncUpdate,
            LISTED,
            json!({"userSyncInbound": {"isSyncAllowed": true}, "groupSyncInbound": null}),
            Some(json!({"groupSyncInbound": {"isSyncAllowed": true}})),
        );
        input.actor = actor;
        input
    };
    fails(&r, &group_on(delegated()), &["not by alice@contoso.com"]);
    fails(
        &r,
        &group_on(app_only(APP, "Provisioner")),
        &["app Provisioner"],
    );
    passes(&r, &group_on(app_only(APP, "IdentityOps Sync")));
    // User sync only: the policy has nothing to say.
    passes(&r, &enable(UNLISTED));
    // Partner operations carry the policy as identitySynchronization.
    let mut partner = change(
        PartnerUpdate,
        LISTED,
        json!({"identitySynchronization": null}),
        Some(json!({"identitySynchronization": {"groupSyncInbound": {"isSyncAllowed": true}}})),
    );
    fails(&r, &partner, &["IdentityOps"]);
    partner.actor = app_only(APP, "IdentityOps");
    passes(&r, &partner);
}

// ---- versions -------------------------------------------------------------------------------

#[test]
fn the_version_changes_with_the_rules_and_only_with_them() {
    let a = rules(ALLOWLIST).version().to_owned();
    assert_eq!(a.len(), 64);
    assert_eq!(a, rules(&format!("# a comment\n{ALLOWLIST}")).version());
    assert_eq!(
        a,
        rules(&format!("{ALLOWLIST}mode = \"enforce\"\n")).version(),
        "defaults are canonical"
    );
    assert_ne!(a, rules(&format!("{ALLOWLIST}mode = \"warn\"\n")).version());
    assert_ne!(
        a,
        rules(&ALLOWLIST.replace("Fabrikam", "Fabrikam Ltd")).version()
    );
    assert_eq!(RuleSet::empty().version(), rules("").version());
    assert_ne!(RuleSet::empty().version(), a);
}

#[test]
fn the_version_changes_when_a_rego_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rego");
    let config = "[[rules.rego]]\nid = \"p\"\nfile = \"p.rego\"\n";
    std::fs::write(&file, "package syncgate\n\nviolations := []\n").unwrap();
    let first = load_in(dir.path(), config).unwrap().version().to_owned();
    assert_eq!(first, load_in(dir.path(), config).unwrap().version());
    std::fs::write(&file, "package syncgate\n\n# reviewed\nviolations := []\n").unwrap();
    assert_ne!(first, load_in(dir.path(), config).unwrap().version());
}

// ---- expected_after -------------------------------------------------------------------------

#[test]
fn expected_after_merges_patches_and_knows_deletes_and_restores() {
    let before = json!({
        "displayName": "A",
        "userSyncInbound": {"isSyncAllowed": false},
        "automaticUserConsentSettings": {"inboundAllowed": true, "outboundAllowed": false}
    });
    let patch = json!({
        "displayName": "B",
        "automaticUserConsentSettings": {"outboundAllowed": true},
        "userSyncInbound": null
    });
    assert_eq!(
        expected_after(SyncUpdate, Some(&before), Some(&patch)),
        Some(json!({
            "displayName": "B",
            "userSyncInbound": null,
            "automaticUserConsentSettings": {"inboundAllowed": true, "outboundAllowed": true}
        }))
    );
    // PATCH onto nothing merges onto {}.
    assert_eq!(
        expected_after(PartnerUpdate, Some(&Value::Null), Some(&json!({"a": 1}))),
        Some(json!({"a": 1}))
    );
    // PUT and POST: the body, whatever was there.
    let body = json!({"userSyncInbound": {"isSyncAllowed": true}});
    assert_eq!(
        expected_after(SyncCreate, Some(&before), Some(&body)),
        Some(body.clone())
    );
    assert_eq!(
        expected_after(PartnerCreate, None, Some(&body)),
        Some(body.clone())
    );
    // Deletes and purges: gone.
    for kind in [
        SyncDelete,
        PartnerDelete,
        DeletedPartnerPurge,
        DeletedSyncPurge,
    ] {
        assert_eq!(
            expected_after(kind, Some(&before), None),
            Some(Value::Null),
            "{kind}"
        );
    }
    // Restores: the live object if there is one, else unknown.
    assert_eq!(
        expected_after(SyncRestore, Some(&before), None),
        Some(before.clone())
    );
    assert_eq!(
        expected_after(PartnerRestore, Some(&Value::Null), None),
        None
    );
    // The undocumented deleted-item sync write: DELETE without a body, else a merge.
    assert_eq!(
        expected_after(DeletedPartnerSyncWrite, Some(&before), None),
        Some(Value::Null)
    );
    assert_eq!(
        expected_after(DeletedPartnerSyncWrite, None, Some(&body)),
        Some(body.clone())
    );
    assert_eq!(expected_after(TemplateReset, Some(&before), None), None);
    // Arrays replace rather than merge.
    assert_eq!(
        expected_after(
            TemplateUpdate,
            Some(&json!({"a": [1, 2]})),
            Some(&json!({"a": [3]}))
        ),
        Some(json!({"a": [3]}))
    );
}

#[test]
fn rule_inputs_round_trip_and_refuse_unknown_keys() {
    let input = enable(LISTED);
    let text = serde_json::to_string(&input).unwrap();
    let back: RuleInput = serde_json::from_str(&text).unwrap();
    assert_eq!(back.operation, "sync_create");
    assert_eq!(back.time, input.time);
    let err = serde_json::from_value::<RuleInput>(
        json!({"operation": "sync_create", "time": "2026-01-07T10:00:00Z", "actr": {}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `actr`"), "{err}");
}

// ---- the sample config block -----------------------------------------------------------------

/// The block offered for `config/syncgate.toml`: it must load as written.
#[test]
fn the_shipped_example_rule_set_loads() {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules");
    let r = RuleSet::load(&raw(SAMPLE), &config_dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.needs_partner_state());
    let evaluation = r.evaluate(&with_consent(
        enable(UNLISTED),
        Some(json!({"automaticUserConsentSettings": {"inboundAllowed": true}})),
    ));
    assert!(matches!(evaluation.verdict(), Verdict::Deny(r) if r.rule == "sync-allowlist"));
}

const SAMPLE: &str = include_str!("../../config/rules/example.toml");
