//! `syncgate demo`: the emulator and the proxy in one process on free local ports, so a new user
//! sees syncgate work with no setup and no access to Graph.

use anyhow::Context;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body};
use crate::config::RawConfig;
use crate::server::ServeOptions;
use crate::store::{Filter, StoreOptions, StoreReader};
use crate::{app, cli, emulator, token};

/// A tenant id for the demo's example partner, on the demo's sync allow-list.
const DEMO_PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

/// A partner the demo's allow-list does not list: enabling sync for it is refused.
const UNLISTED_PARTNER: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

/// The demo's local rules: sync only for the listed partner, and only for its approved name.
const DEMO_RULES: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [{ tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" }]

[[rules.builtin]]
id = "sync-names"
type = "display_name"
allowlist = "sync-allowlist"
"#;

pub async fn run(listen: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    let emulator_listener = TcpListener::bind("127.0.0.1:0").await?;
    let emulator_url = format!("http://{}", emulator_listener.local_addr()?);
    let emulator_task = tokio::spawn(emulator::run(
        emulator_listener,
        ServeOptions::default(),
        shutdown.clone(),
    ));

    let dir = std::env::temp_dir().join(format!("syncgate-demo-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut raw: RawConfig = toml::from_str(DEMO_RULES).context("the demo's rules")?;
    raw.proxy.listen = listen.to_owned();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = emulator_url.clone();
    raw.store.path = dir.join("syncgate.db");
    let settings = raw.validate().context("demo configuration")?;
    let running = app::start(settings, shutdown.clone()).await?;

    let proxy = running.url();
    let token = token::unsigned_jwt(&json!({
        "oid": "5f1d2c3b-0000-4000-8000-00000000d3e0",
        "upn": "demo.admin@contoso.example",
        "tid": "00000000-0000-4000-8000-0000000c0470",
        "idtyp": "user",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
    }));
    let base = format!("{proxy}/v1.0/policies/crossTenantAccessPolicy/partners");
    let db = dir.join("syncgate.db");

    // A few changes through the proxy, so the trail has something to show.
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let sync = format!("{base}/{DEMO_PARTNER}/identitySynchronization");
    let unlisted_sync = format!("{base}/{UNLISTED_PARTNER}/identitySynchronization");
    let steps: [(&str, Method, &str, Option<Value>); 6] = [
        (
            "create the partner",
            Method::POST,
            &base,
            Some(json!({"tenantId": DEMO_PARTNER})),
        ),
        (
            "enable user sync",
            Method::PUT,
            &sync,
            Some(json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}})),
        ),
        (
            "disable it again",
            Method::PATCH,
            &sync,
            Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
        ),
        (
            "a mis-cased property (refused before reaching Graph)",
            Method::PATCH,
            &sync,
            Some(json!({"UserSyncInbound": {"isSyncAllowed": true}})),
        ),
        (
            "create a partner not on the allow-list",
            Method::POST,
            &base,
            Some(json!({"tenantId": UNLISTED_PARTNER})),
        ),
        (
            "enable sync for it (refused by rule sync-allowlist)",
            Method::PUT,
            &unlisted_sync,
            Some(json!({"displayName": "Unknown Ltd", "userSyncInbound": {"isSyncAllowed": true}})),
        ),
    ];
    println!("syncgate demo: making a few changes through the proxy ...");
    let mut last_audit_id = None;
    for (what, method, url, body) in steps {
        let (status, audit_id) = send(&client, method.clone(), url, &token, body).await?;
        println!(
            "  {what:<55} {method} -> {status}  (x-syncgate-audit-id {})",
            audit_id.as_deref().unwrap_or("-")
        );
        last_audit_id = audit_id.or(last_audit_id);
    }
    let reader = StoreReader::open(&db, &StoreOptions::default()).await?;
    let trail = reader.list(&Filter::default()).await?;
    reader.close().await;
    println!(
        "\nThe audit trail so far (syncgate audit list --db {}):\n",
        db.display()
    );
    print!("{}", cli::audit::render_table(&trail));

    println!(
        r#"
syncgate demo is running.

  proxy (point Graph clients here)  {proxy}
  admin (/healthz, /readyz)         http://{admin}
  Graph emulator (the upstream)     {emulator_url}
  audit log file                    {db}
  local rules                       sync only for {DEMO_PARTNER} ("Fabrikam")

Look closer:

  syncgate audit show {op} --db {db}
  syncgate audit verify --db {db}

Try it yourself (the token is an unsigned demo JWT; syncgate and the emulator read its claims only):

  export TOKEN='{token}'
  curl -s -X PATCH {sync} -H "Authorization: Bearer $TOKEN" \
       -H 'Content-Type: application/json' -d '{{"displayName":"Fabrikam Ltd"}}' -D - -o /dev/null
  curl -s "{base}?\$expand=identitySynchronization" -H "Authorization: Bearer $TOKEN"
  curl -s {emulator_url}/_emulator/state

Press Ctrl-C to stop."#,
        admin = running.admin_addr,
        db = db.display(),
        op = last_audit_id.as_deref().unwrap_or("<operation id>"),
    );
    running.stopped().await;
    let _ = emulator_task.await;
    Ok(())
}

/// One request through the proxy: its status and `x-syncgate-audit-id`.
async fn send(
    client: &Client<HttpConnector, Body>,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(http::StatusCode, Option<String>)> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or_else(body::empty, |b| body::full(b.to_string()));
    let resp = client.request(req.body(body)?).await?;
    let status = resp.status();
    let audit_id = resp
        .headers()
        .get("x-syncgate-audit-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    resp.into_body().collect().await?;
    Ok((status, audit_id))
}
