//! Start-up: bind the proxy and admin listeners from validated [`Settings`] and run them until a
//! shutdown token is cancelled. The CLI, the demo and the tests all start syncgate through here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::Settings;
use crate::proxy::Proxy;
use crate::proxy::upstream::Upstream;
use crate::server::{self, ServeOptions};

/// A started proxy: its bound addresses and the task serving it.
pub struct RunningProxy {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Whether clients reach the proxy over TLS.
    pub tls: bool,
    task: JoinHandle<()>,
}

impl RunningProxy {
    /// The base URL Graph clients use instead of `https://graph.microsoft.com`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.proxy_addr)
    }

    /// Wait until the proxy has drained and stopped (after its shutdown token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Bind both listeners and start serving. Returns once the ports are bound, so callers can print
/// or use the addresses (port 0 picks free ones).
pub async fn start(
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<RunningProxy> {
    let proxy_listener = TcpListener::bind(settings.listen).await?;
    let admin_listener = TcpListener::bind(settings.admin_listen).await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let tls = settings.tls.is_some();

    let proxy = Arc::new(Proxy::new(Upstream::new(&settings)));
    let proxy_options = ServeOptions {
        tls: settings.tls.clone(),
        shutdown_grace: settings.shutdown_grace,
        header_read_timeout: settings.header_read_timeout,
    };
    let admin = Arc::new(Admin::new(shutdown.clone()));
    let admin_options = ServeOptions {
        tls: None,
        ..proxy_options.clone()
    };

    let task = tokio::spawn(async move {
        // The admin listener outlives the proxy's drain so `/readyz` can say "draining".
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(server::serve(
            admin_listener,
            admin,
            admin_options,
            admin_stop.clone(),
        ));
        server::serve(proxy_listener, proxy, proxy_options, shutdown).await;
        admin_stop.cancel();
        let _ = admin_task.await;
    });
    Ok(RunningProxy {
        proxy_addr,
        admin_addr,
        tls,
        task,
    })
}
