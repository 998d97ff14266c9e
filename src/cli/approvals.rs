//! `syncgate approvals list|show|approve|reject`: the approval gate from a terminal, through a
//! running syncgate's admin API (`/api/v1/approvals`), so a vote is counted and recorded exactly
//! as one cast with curl or a script would be.
//!
//! The API key comes from `--key-file FILE` (its first line) or the `SYNCGATE_ADMIN_KEY`
//! environment variable, never from a flag: flags end up in shell history and in `ps`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The environment variable holding the admin API key when no `--key-file` is given.
pub(crate) const KEY_ENV: &str = "SYNCGATE_ADMIN_KEY";
/// The largest answer read from the admin API.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct ApprovalsArgs {
    #[command(flatten)]
    admin: AdminApi,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Args)]
pub(crate) struct AdminApi {
    /// The admin listener's URL.
    #[arg(
        long,
        value_name = "URL",
        env = "SYNCGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    admin_url: String,
    /// A file whose first line is the API key (default: the SYNCGATE_ADMIN_KEY variable).
    #[arg(long, value_name = "FILE", global = true)]
    key_file: Option<PathBuf>,
    /// A CA bundle (PEM) the admin listener's certificate chains to, for an https URL.
    #[arg(long, value_name = "FILE", global = true)]
    ca: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List approval requests, newest first.
    List {
        /// Only requests with this status: pending, approved, rejected, expired, void, used.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Show one request: what it would change, who asked, the votes so far.
    Show {
        /// The approval id (printed in the held change's answer).
        id: String,
    },
    /// Vote to approve a request.
    Approve {
        id: String,
        /// Why (recorded with the vote in the audit log).
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Vote to reject a request (one rejection rejects it).
    Reject {
        id: String,
        /// Why (recorded with the vote in the audit log).
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
}

pub(crate) async fn run(args: ApprovalsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.admin)?;
    match args.command {
        ApprovalsCommand::List { status, limit } => {
            let mut query = format!("limit={limit}");
            if let Some(status) = status {
                query.push_str("&status=");
                query.push_str(
                    &form_urlencoded::byte_serialize(status.as_bytes()).collect::<String>(),
                );
            }
            let answer = api
                .call(Method::GET, &format!("/api/v1/approvals?{query}"), None)
                .await?;
            if args.admin.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let rows = answer["value"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("syncgate: no approval requests.");
                return Ok(());
            }
            println!(
                "{:<36}  {:<8}  {:<24}  {:<36}  CHANGE",
                "ID", "STATUS", "VOTES", "PARTNER"
            );
            for a in rows {
                println!(
                    "{:<36}  {:<8}  {:<24}  {:<36}  {} {} (by {})",
                    text(&a["id"]),
                    text(&a["status"]),
                    text(&a["progress"]),
                    text(&a["partner_tenant_id"]),
                    text(&a["method"]),
                    text(&a["canonical_path"]),
                    requester(&a),
                );
            }
            Ok(())
        }
        ApprovalsCommand::Show { id } => {
            let a = api.call(Method::GET, &path_of(&id, None), None).await?;
            if args.admin.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print!("{}", render(&a));
            }
            Ok(())
        }
        ApprovalsCommand::Approve { id, comment } => {
            vote(&api, &id, "approve", comment, args.admin.json).await
        }
        ApprovalsCommand::Reject { id, comment } => {
            vote(&api, &id, "reject", comment, args.admin.json).await
        }
    }
}

async fn vote(
    api: &Api,
    id: &str,
    ballot: &str,
    comment: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let body = json!({ "comment": comment });
    let a = api
        .call(Method::POST, &path_of(id, Some(ballot)), Some(body))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        let id = text(&a["id"]);
        match a["status"].as_str() {
            Some("pending") => println!(
                "syncgate: voted {ballot} on approval {id}; it is still pending ({}).",
                text(&a["progress"])
            ),
            _ => println!(
                "syncgate: voted {ballot} on approval {id}; it is now {}.",
                text(&a["status"])
            ),
        }
    }
    Ok(())
}

/// `/api/v1/approvals/{id}[/{ballot}]`, the id percent-encoded so it stays one path segment.
fn path_of(id: &str, ballot: Option<&str>) -> String {
    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    match ballot {
        Some(b) => format!("/api/v1/approvals/{id}/{b}"),
        None => format!("/api/v1/approvals/{id}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn requester(a: &Value) -> String {
    let r = &a["requester"];
    match r["name"].as_str() {
        Some(name) => format!("{name}, {}", text(&r["key"])),
        None => text(&r["key"]),
    }
}

/// One request as text for people.
pub(crate) fn render(a: &Value) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<14} {value}\n"));
    };
    line("Approval", text(&a["id"]));
    line(
        "Status",
        format!("{} ({})", text(&a["status"]), text(&a["progress"])),
    );
    line(
        "Change",
        format!("{} {}", text(&a["method"]), text(&a["canonical_path"])),
    );
    line("Partner", text(&a["partner_tenant_id"]));
    line("Requester", requester(a));
    line("Rule", text(&a["rule"]));
    line(
        "Policy",
        format!(
            "{} ({} approver(s))",
            text(&a["policy"]["name"]),
            text(&a["policy"]["required"])
        ),
    );
    line("Requested", text(&a["created"]));
    line("Vote until", text(&a["vote_deadline"]));
    if !a["send_deadline"].is_null() {
        line("Send until", text(&a["send_deadline"]));
    }
    if !a["justification"].is_null() {
        line("Justification", text(&a["justification"]));
    }
    if !a["ticket"].is_null() {
        line("Ticket", text(&a["ticket"]));
    }
    if !a["used_by"].is_null() {
        line("Used by", text(&a["used_by"]));
    }
    for v in a["votes"].as_array().into_iter().flatten() {
        let comment = v["comment"]
            .as_str()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        line(
            "Vote",
            format!(
                "{} {} at {}{comment}",
                text(&v["principal"]),
                text(&v["ballot"]),
                text(&v["time"])
            ),
        );
    }
    let change = &a["change"];
    if let Some(message) = change["message"].as_str() {
        line("Why held", message.to_owned());
    }
    out.push_str("Diff (RFC 6902, from the state when requested):\n");
    let diff = serde_json::to_string_pretty(&change["diff"]).unwrap_or_default();
    for l in diff.lines() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A client for the admin API with the key read once.
struct Api {
    base: String,
    key: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    fn new(args: &AdminApi) -> anyhow::Result<Api> {
        let key = match &args.key_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the key file {}", file.display()))?;
                text.lines().next().unwrap_or_default().trim().to_owned()
            }
            None => std::env::var(KEY_ENV).unwrap_or_default().trim().to_owned(),
        };
        if key.is_empty() {
            bail!(
                "no admin API key: put it in a file named with --key-file, or in the \
                 {KEY_ENV} environment variable."
            );
        }
        let base = args.admin_url.trim_end_matches('/').to_owned();
        let uri: http::Uri = base
            .parse()
            .with_context(|| format!("{base:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            bail!("the admin URL {base:?} must start with http:// or https://.");
        }
        let tls = crate::tls::client_config(args.ca.as_deref())
            .with_context(|| "cannot load the CA bundle (--ca)")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Api {
            base,
            key,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Call `path`; the JSON answer, or an error carrying the API's code and message.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(bytes))?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let resp = self
                .client
                .request(req)
                .await
                .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the admin API's answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, body))
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the admin API at {} did not answer within {TIMEOUT:?}",
                self.base
            )
        })??;
        let (status, body) = answer;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("the admin API answered {status}: {code}: {message}");
        }
        Ok(value)
    }
}
