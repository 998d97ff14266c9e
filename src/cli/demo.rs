//! `syncgate demo`: the emulator and the proxy in one process on free local ports, so a new user
//! sees syncgate work with no setup and no access to Graph.
//!
//! The demo is read by someone who has never seen syncgate, so its output is narration: no log
//! lines in between (logs default to warnings, see [`DEFAULT_LOG_LEVEL`]), lines of at most 100
//! columns, every suggestion says what it will do, and every printed command runs as printed
//! (nothing puts `syncgate` on the PATH after `cargo run`, so the running executable's own path is
//! printed unless the PATH already finds it). Its files live in one temporary folder that is
//! removed when the demo stops, Ctrl-C included.

use std::path::{Path, PathBuf};

use anyhow::Context;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::auth::{ApiKey, KeyHash};
use crate::body::{self, Body};
use crate::cli::render::fitted_table;
use crate::config::RawConfig;
use crate::server::ServeOptions;
use crate::store::{Filter, StoreLocation, StoreOptions, StoreReader};
use crate::{app, emulator, token};

/// The demo's log level when `RUST_LOG` is not set: the narration on stdout is the output, and
/// `RUST_LOG=info syncgate demo` shows every request as the server would log it.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "warn";

/// A tenant id for the demo's example partner, on the demo's sync allow-list.
const DEMO_PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

/// A partner the demo's allow-list does not list: enabling sync for it is refused.
const UNLISTED_PARTNER: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

/// A partner on the allow-list but new: enabling sync for it waits for an approver.
const NEW_PARTNER: &str = "6b1e5a2c-7d4f-4e8a-9c3b-2f0d1e4a5b6c";

/// The approver the demo configures (a second person: the demo's requester cannot approve).
const APPROVER: &str = "ann";
const APPROVER_OID: &str = "a11ce000-0000-4000-8000-00000000a220";

/// The demo's local rules: sync only for listed partners, and only under their approved names;
/// for a partner not yet established (Northwind), only once someone approved that change.
const DEMO_RULES: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [
    { tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" },
    { tenant_id = "6b1e5a2c-7d4f-4e8a-9c3b-2f0d1e4a5b6c", display_name = "Northwind" },
]

[[rules.builtin]]
id = "sync-names"
type = "display_name"
allowlist = "sync-allowlist"

[[rules.builtin]]
id = "new-partners"
type = "partner_allowlist"
action = "require_approval"
partners = [{ tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" }]

[approvals.policies.default]
required = 1
approvers = ["ann"]
vote_window = "1h"
send_window = "10m"
"#;

const PARTNERS: &str = "/v1.0/policies/crossTenantAccessPolicy/partners";

/// The demo's folder (audit log, token file), removed with everything in it when dropped: at the
/// end of a run, on Ctrl-C (which ends the run gracefully) and when the demo fails.
struct DemoDir(PathBuf);

impl DemoDir {
    /// A new folder in the system's temporary folder, with a short random name so the paths the
    /// demo prints stay short.
    fn create() -> anyhow::Result<Self> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("syncgate-demo-{}", &id[id.len() - 8..]);
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One narrated change: what it shows, and the request.
struct Step {
    what: &'static str,
    method: Method,
    path: String,
    body: Value,
}

/// The changes the demo makes: allowed ones, both kinds of refusal, and one held for approval.
fn steps() -> [Step; 8] {
    let sync = format!("{PARTNERS}/{DEMO_PARTNER}/identitySynchronization");
    let unlisted_sync = format!("{PARTNERS}/{UNLISTED_PARTNER}/identitySynchronization");
    let step = |what, method, path: &str, body| Step {
        what,
        method,
        path: path.to_owned(),
        body,
    };
    [
        step(
            "create partner Fabrikam (on the allow-list)",
            Method::POST,
            PARTNERS,
            json!({"tenantId": DEMO_PARTNER}),
        ),
        step(
            "enable inbound user sync for Fabrikam: allowed, forwarded, recorded",
            Method::PUT,
            &sync,
            json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
        ),
        step(
            "disable it again",
            Method::PATCH,
            &sync,
            json!({"userSyncInbound": {"isSyncAllowed": false}}),
        ),
        step(
            "a mis-cased property: refused before anything reaches Graph",
            Method::PATCH,
            &sync,
            json!({"UserSyncInbound": {"isSyncAllowed": true}}),
        ),
        step(
            "create partner Unknown Ltd (not on the allow-list)",
            Method::POST,
            PARTNERS,
            json!({"tenantId": UNLISTED_PARTNER}),
        ),
        step(
            "enable sync for Unknown Ltd: refused by the rule sync-allowlist",
            Method::PUT,
            &unlisted_sync,
            json!({"displayName": "Unknown Ltd", "userSyncInbound": {"isSyncAllowed": true}}),
        ),
        step(
            "create partner Northwind (listed, but new)",
            Method::POST,
            PARTNERS,
            json!({"tenantId": NEW_PARTNER}),
        ),
        northwind("enable sync for Northwind: held, the rule new-partners asks for an approval"),
    ]
}

/// Enabling sync for Northwind: held at first, sent once approved (the same call both times).
fn northwind(what: &'static str) -> Step {
    Step {
        what,
        method: Method::PUT,
        path: format!("{PARTNERS}/{NEW_PARTNER}/identitySynchronization"),
        body: json!({"displayName": "Northwind", "userSyncInbound": {"isSyncAllowed": true}}),
    }
}

/// What the demo started, for the closing guide.
struct Started {
    proxy: String,
    admin: String,
    emulator: String,
    dir: PathBuf,
    db: PathBuf,
}

pub(crate) async fn run(listen: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    let emulator_listener = TcpListener::bind("127.0.0.1:0").await?;
    let emulator_url = format!("http://{}", emulator_listener.local_addr()?);
    let emulator_task = tokio::spawn(emulator::run(
        emulator_listener,
        ServeOptions::default(),
        shutdown.clone(),
    ));

    let dir = DemoDir::create()?;
    let db = dir.0.join("syncgate.db");
    let mut raw: RawConfig = toml::from_str(DEMO_RULES).context("the demo's rules")?;
    // The approver's API key, made now and kept in the demo's folder (its hash in the config).
    let key = ApiKey::generate().context("cannot make the approver's API key")?;
    let key_file = dir.0.join(format!("{APPROVER}.key"));
    std::fs::write(&key_file, key.reveal()).context("cannot write the approver's key")?;
    raw.admin.principals.push(crate::config::RawPrincipal {
        name: APPROVER.into(),
        roles: vec!["approver".into()],
        oid: Some(APPROVER_OID.into()),
        key_hash: Some(
            KeyHash::new(&key)
                .context("the approver's key")?
                .to_string(),
        ),
        ..Default::default()
    });
    raw.proxy.listen = listen.to_owned();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = emulator_url.clone();
    raw.store.path = db.clone();
    let settings = raw.validate().context("demo configuration")?;
    let running = app::start(settings, shutdown.clone()).await?;
    let token = demo_token();
    std::fs::write(dir.0.join("token"), &token).context("cannot write the demo token")?;
    let started = Started {
        proxy: running.url(),
        admin: format!("http://{}", running.admin_addr),
        emulator: emulator_url,
        dir: dir.0.clone(),
        db,
    };

    println!("syncgate demo: the Graph emulator as the upstream, syncgate in front of it.");
    println!("\nMaking eight changes through the proxy:\n");
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let (mut ids, held) = make_changes(&client, &started.proxy, &token).await?;
    let refused = ids.get(5).cloned().flatten();
    approve_and_send(
        &client,
        &started,
        &token,
        &key_file,
        held.as_deref(),
        &mut ids,
    )
    .await?;
    print_trail(&started.db, &ids).await?;
    print_guide(&started, refused.as_deref(), &key_file);

    running.stopped().await;
    let _ = emulator_task.await;
    drop(dir);
    Ok(())
}

/// An unsigned JWT for a demo administrator: syncgate and the emulator read its claims only.
fn demo_token() -> String {
    token::unsigned_jwt(&json!({
        "oid": "5f1d2c3b-0000-4000-8000-00000000d3e0",
        "upn": "demo.admin@contoso.example",
        "tid": "00000000-0000-4000-8000-0000000c0470",
        "idtyp": "user",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
    }))
}

/// Send the demo's changes, narrating each: their `x-syncgate-audit-id`s in order, and the
/// approval id the last one was held under.
async fn make_changes(
    client: &Client<HttpConnector, Body>,
    proxy: &str,
    token: &str,
) -> anyhow::Result<(Vec<Option<String>>, Option<String>)> {
    let mut ids = Vec::new();
    let mut held = None;
    for (n, step) in steps().into_iter().enumerate() {
        let sent = narrate(client, proxy, token, n + 1, step).await?;
        ids.push(sent.audit_id);
        held = sent.approval_id;
    }
    Ok((ids, held))
}

/// Step `n`: send it and say what came back.
async fn narrate(
    client: &Client<HttpConnector, Body>,
    proxy: &str,
    token: &str,
    n: usize,
    step: Step,
) -> anyhow::Result<Sent> {
    let method = step.method.clone();
    let url = format!("{proxy}{}", step.path);
    let sent = send(client, method.clone(), &url, token, step.body).await?;
    println!("  {n}. {}", step.what);
    println!(
        "     {method} -> {}, audit id {}",
        sent.status,
        sent.audit_id.as_deref().unwrap_or("-")
    );
    if let Some(approval) = &sent.approval_id {
        println!("     approval id {approval} (x-syncgate-approval-id)");
    }
    Ok(sent)
}

/// The held change: its approver votes with `syncgate approvals approve` (run as printed),
/// then the requester sends the very same call again, and it goes through.
async fn approve_and_send(
    client: &Client<HttpConnector, Body>,
    s: &Started,
    token: &str,
    key_file: &Path,
    held: Option<&str>,
    ids: &mut Vec<Option<String>>,
) -> anyhow::Result<()> {
    let Some(approval) = held else {
        anyhow::bail!("the demo's change for Northwind was not held for approval");
    };
    println!("  9. {APPROVER}, an approver (not the requester), approves it with the CLI:");
    let args = [
        "approvals".to_owned(),
        "approve".to_owned(),
        approval.to_owned(),
        "--comment".to_owned(),
        "Northwind onboarding, checked".to_owned(),
        "--admin-url".to_owned(),
        s.admin.clone(),
        "--key-file".to_owned(),
        key_file.display().to_string(),
    ];
    println!("     syncgate approvals approve {approval} \\");
    println!(
        "       --comment '...' --key-file {}",
        shell_quote(&key_file.display().to_string())
    );
    let exe = std::env::current_exe().context("cannot find syncgate's own executable")?;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(&args)
            .env_remove("SYNCGATE_ADMIN_KEY")
            .env_remove("SYNCGATE_ADMIN_URL")
            .output()
    })
    .await?
    .context("cannot run syncgate approvals")?;
    let said = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    })
    .trim()
    .to_owned();
    println!("     {said}");
    if !out.status.success() {
        anyhow::bail!("the approval failed: {said}");
    }
    ids.push(None);
    let again = northwind("the same call as step 8 again: sent under the approval, recorded");
    let sent = narrate(client, &s.proxy, token, 10, again).await?;
    ids.push(sent.audit_id);
    Ok(())
}

/// The trail the changes left, one line per event, narrow enough for a terminal (the full table
/// is `syncgate audit list`). Events are read as their stored JSON, the form `audit` exports.
async fn print_trail(db: &Path, ids: &[Option<String>]) -> anyhow::Result<()> {
    let location = StoreLocation::Sqlite(db.to_owned());
    let reader = StoreReader::open(&location, &StoreOptions::default()).await?;
    let trail = reader.list(&Filter::default()).await;
    reader.close().await;
    println!(
        "\nThe audit trail: a change is recorded as \"received\" before it is sent and \
         \"completed\"\nafter Graph answered; a refusal is one \"denied\" event; a held change \
         is an\n\"approval_requested\" event, and each vote an \"approval_vote\" under the same \
         operation.\nSTEP is the change above.\n"
    );
    let header = [
        "STEP",
        "KIND",
        "OPERATION",
        "PARTNER",
        "DECISION",
        "STATUS",
        "EFFECT",
    ];
    let mut rows = Vec::new();
    for recorded in trail? {
        let event = serde_json::to_value(&recorded.event)?;
        let field = |name: &str| match &event[name] {
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let step = ids
            .iter()
            .position(|id| id.as_deref() == Some(field("operation_id").as_str()))
            .map_or("-".to_owned(), |i| (i + 1).to_string());
        let partner = match field("partner_tenant_id").as_str() {
            DEMO_PARTNER => "Fabrikam".to_owned(),
            UNLISTED_PARTNER => "Unknown Ltd".to_owned(),
            NEW_PARTNER => "Northwind".to_owned(),
            other => other.to_owned(),
        };
        rows.push([
            step,
            field("kind"),
            field("operation"),
            partner,
            field("decision"),
            field("upstream_status"),
            field("effect"),
        ]);
    }
    // The trail is narrow by design; indented under the narration.
    for line in fitted_table(&header, &rows, &[], None).lines() {
        println!("  {line}");
    }
    Ok(())
}

/// Where everything runs, and what to try next: each suggestion says what it will do, and every
/// command runs as printed in a POSIX shell.
fn print_guide(s: &Started, refused_id: Option<&str>, key_file: &Path) {
    let (define_exe, exe) = match syncgate_command() {
        Some(on_path) => (String::new(), on_path),
        None => (
            format!("  SYNCGATE={}\n", shell_quote(&current_exe_display())),
            "\"$SYNCGATE\"".to_owned(),
        ),
    };
    println!(
        r#"
syncgate demo is running. Ctrl-C stops it and removes {dir}.

  proxy (point Graph clients here)  {proxy}
  admin (/healthz, /readyz)         {admin}
  Graph emulator (the upstream)     {emulator}
  audit log                         {db}
  local rules                       sync only for Fabrikam and Northwind, under those names;
                                    Northwind's only once an approver said yes

Look closer (paste into a shell):

{define_exe}  DB={db_quoted}
  KEY={key}
  # every event of the last change (refused): who asked, what, which rule said no and why
  {exe} audit show {op} --db "$DB"
  # recompute the log's hash chain: exit 0 when it is intact
  {exe} audit verify --db "$DB"
  # the approval requests, through the admin API, as the approver sees them
  {exe} approvals list --admin-url {admin} --key-file "$KEY"

Try it yourself (the token is an unsigned demo JWT: syncgate and the emulator read its claims):

  export TOKEN="$(cat {token})"
  P={proxy}{PARTNERS}
  S="$P/{DEMO_PARTNER}/identitySynchronization"
  # Rename Fabrikam's sync policy to a name the rules did not approve: refused with 403, and
  # the body, in Graph's error shape, names the rule (sync-names) and why.
  curl -s -i -w '\n' -X PATCH "$S" -H "Authorization: Bearer $TOKEN" \
       -H 'Content-Type: application/json' -d '{{"displayName":"Fabrikam Ltd"}}'
  # The same with the approved name: allowed, forwarded to Graph, recorded (204, with the
  # change's x-syncgate-audit-id header).
  curl -s -i -w '\n' -X PATCH "$S" -H "Authorization: Bearer $TOKEN" \
       -H 'Content-Type: application/json' -d '{{"displayName":"Fabrikam"}}'
  # List the partners with their sync policies: a read, passed through unchanged.
  curl -s -w '\n' "$P?\$expand=identitySynchronization" -H "Authorization: Bearer $TOKEN"
  # The emulator's own view of its state (test support, not part of Graph).
  curl -s -w '\n' {emulator}/_emulator/state

Press Ctrl-C to stop."#,
        dir = s.dir.display(),
        proxy = s.proxy,
        admin = s.admin,
        emulator = s.emulator,
        db = s.db.display(),
        db_quoted = shell_quote(&s.db.display().to_string()),
        token = shell_quote(&s.dir.join("token").display().to_string()),
        key = shell_quote(&key_file.display().to_string()),
        op = refused_id.unwrap_or("<operation id>"),
    );
}

/// `syncgate` when the PATH finds this very executable, else `None` (a `cargo run` build).
fn syncgate_command() -> Option<String> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let name = exe.file_name()?.to_owned();
    let found = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())?;
    (found.canonicalize().ok()? == exe).then(|| name.to_string_lossy().into_owned())
}

fn current_exe_display() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "syncgate".to_owned())
}

/// `s` as one POSIX shell word: unchanged when it holds only safe characters, else single-quoted.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the proxy answered a step.
struct Sent {
    status: http::StatusCode,
    audit_id: Option<String>,
    /// Set when the change was held for approval.
    approval_id: Option<String>,
}

/// One request through the proxy: its status, `x-syncgate-audit-id` and, for a held change,
/// `x-syncgate-approval-id`.
async fn send(
    client: &Client<HttpConnector, Body>,
    method: Method,
    url: &str,
    token: &str,
    body: Value,
) -> anyhow::Result<Sent> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    let resp = client
        .request(req.body(body::full(body.to_string()))?)
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let sent = Sent {
        status: resp.status(),
        audit_id: header("x-syncgate-audit-id"),
        approval_id: header(crate::approvals::APPROVAL_ID_HEADER),
    };
    resp.into_body().collect().await?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/tmp/a-b_c.db"), "/tmp/a-b_c.db");
        assert_eq!(shell_quote("/tmp/my dir/x"), "'/tmp/my dir/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
