//! `syncgate demo`: the emulator and the proxy in one process on free local ports, so a new user
//! sees syncgate work with no setup and no access to Graph.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RawConfig;
use crate::server::ServeOptions;
use crate::{app, emulator, token};

/// A tenant id for the demo's example partner.
const DEMO_PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

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
    let mut raw = RawConfig::default();
    raw.proxy.listen = listen.to_owned();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = emulator_url.clone();
    raw.store.path = dir.join("syncgate.db");
    let settings = raw.validate().context("demo configuration")?;
    let running = app::start(settings, shutdown.clone()).await?;

    let proxy = running.url();
    let token = token::unsigned_jwt(&serde_json::json!({
        "oid": "5f1d2c3b-0000-4000-8000-00000000d3e0",
        "upn": "demo.admin@contoso.example",
        "tid": "00000000-0000-4000-8000-0000000c0470",
        "idtyp": "user",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
    }));
    let base = format!("{proxy}/v1.0/policies/crossTenantAccessPolicy/partners");
    println!(
        r#"syncgate demo is running.

  proxy (point Graph clients here)  {proxy}
  admin (/healthz, /readyz)         http://{admin}
  Graph emulator (the upstream)     {emulator_url}
  audit log file                    {db}

Try it (the token is an unsigned demo JWT; syncgate and the emulator read its claims only):

  export TOKEN='{token}'
  curl -s -X POST {base} -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{{"tenantId":"{DEMO_PARTNER}"}}'
  curl -s -X PUT {base}/{DEMO_PARTNER}/identitySynchronization -H "Authorization: Bearer $TOKEN" \
       -H 'Content-Type: application/json' -d '{{"displayName":"Fabrikam","userSyncInbound":{{"isSyncAllowed":true}}}}'
  curl -s "{base}?\$expand=identitySynchronization" -H "Authorization: Bearer $TOKEN"
  curl -s {emulator_url}/_emulator/state

Press Ctrl-C to stop."#,
        admin = running.admin_addr,
        db = dir.join("syncgate.db").display(),
    );
    running.stopped().await;
    let _ = emulator_task.await;
    Ok(())
}
