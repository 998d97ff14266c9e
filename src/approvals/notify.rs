//! Telling people about approval requests: on each new request and each decision, one notice
//! per configured webhook is written to the outbox (`approval_outbox`) in the transaction that
//! records what it announces, and a task POSTs it, retrying with backoff until the webhook takes
//! it (a 2xx answer). A webhook that is down delays its own notices and nothing else: votes and
//! changes never wait for it, and its notices survive restarts.
//!
//! Three shapes (docs/approvals.md "Notifications"): syncgate's own JSON document (`json`), a
//! Microsoft Teams message with an Adaptive Card (`teams`, what Teams incoming webhooks and
//! Workflows take), and a Slack incoming-webhook message with Block Kit sections (`slack`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::policy::{ApprovalSettings, Webhook, WebhookFormat};
use super::{Approval, Status, clock};
use crate::store::Store;
use crate::store::approvals::{Notice, NoticeAttempt, StoredNotice};

/// What a notice announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    Requested,
    /// A vote decided the request, or a window closed: its new status says which.
    Decided,
}

/// The most webhooks' queues served in one round (far more than anyone configures).
const QUEUES: i64 = 64;
/// The longest wait between two attempts at one notice.
const RETRY_MAX: Duration = Duration::from_secs(600);
/// How often the outbox is looked at when nothing wakes the task (another replica's notices,
/// retries coming due).
const POLL: Duration = Duration::from_secs(5);

/// One notice per webhook announcing `what` about `approval` (in its state after the change).
pub(crate) fn notices(
    settings: &ApprovalSettings,
    what: Announce,
    approval: &Approval,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    let link = settings.link_to(&approval.id);
    settings
        .webhooks
        .iter()
        .map(|hook| Notice {
            id: uuid::Uuid::now_v7().to_string(),
            approval_id: approval.id.clone(),
            webhook: hook.name.clone(),
            body: body(hook.format, what, approval, link.as_deref()).to_string(),
            created: now,
        })
        .collect()
}

/// The headline of a notice: what happened, to which partner, asked by whom.
fn headline(what: Announce, a: &Approval) -> String {
    let partner = a.binding.partner.as_deref().unwrap_or("(template)");
    let event = match (what, a.status) {
        (Announce::Requested, _) => "Approval requested",
        (_, Status::Approved) => "Approved",
        (_, Status::Rejected) => "Rejected",
        (_, Status::Expired) => "Expired",
        (_, Status::Void) => "Voided",
        (_, Status::Used) => "Applied",
        (_, Status::Pending) => "Pending",
    };
    format!(
        "{event}: {} {} for partner {partner}, requested by {}",
        a.binding.method,
        a.binding.canonical_path,
        a.binding.requester.shown()
    )
}

/// The notice's body in `format`.
pub(crate) fn body(
    format: WebhookFormat,
    what: Announce,
    a: &Approval,
    link: Option<&str>,
) -> Value {
    match format {
        WebhookFormat::Json => json_document(what, a, link),
        WebhookFormat::Teams => teams(what, a, link),
        WebhookFormat::Slack => slack(what, a, link),
    }
}

/// syncgate's own notice (documented in docs/approvals.md).
fn json_document(what: Announce, a: &Approval, link: Option<&str>) -> Value {
    json!({
        "type": "syncgate.approval",
        "event": match what {
            Announce::Requested => "requested",
            Announce::Decided => a.status.as_str(),
        },
        "approval": {
            "id": a.id,
            "status": a.status.as_str(),
            "policy": a.policy.name,
            "rule": a.rule,
            "operation_id": a.operation_id,
            "created": a.created.to_rfc3339(),
            "method": a.binding.method,
            "canonical_path": a.binding.canonical_path,
            "partner_tenant_id": a.binding.partner,
            "requester": a.binding.requester,
            "justification": a.justification,
            "ticket": a.ticket,
            "required": a.policy.required,
            "vote_deadline": a.vote_deadline.to_rfc3339(),
            "send_deadline": a.send_deadline.map(|t| t.to_rfc3339()),
            "votes": a.votes,
            "change": a.change,
        },
        "link": link,
    })
}

/// The facts every chat message shows, as (name, value) pairs.
fn facts(a: &Approval) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Approval", a.id.clone()),
        ("Status", a.status.as_str().to_owned()),
        (
            "Partner",
            a.binding
                .partner
                .clone()
                .unwrap_or_else(|| "(template)".into()),
        ),
        ("Requester", a.binding.requester.shown()),
        (
            "Change",
            format!("{} {}", a.binding.method, a.binding.canonical_path),
        ),
        (
            "Policy",
            format!("{} ({} approver(s))", a.policy.name, a.policy.required),
        ),
        ("Vote until", a.vote_deadline.to_rfc3339()),
    ];
    if let Some(j) = &a.justification {
        facts.push(("Justification", j.clone()));
    }
    if let Some(t) = &a.ticket {
        facts.push(("Ticket", t.clone()));
    }
    for v in &a.votes {
        let comment = v
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        facts.push((
            "Vote",
            format!("{} {}{comment}", v.principal, v.ballot.as_str()),
        ));
    }
    facts
}

/// The change as approvers read it: the RFC 6902 diff from the before-state, pretty-printed.
fn diff_text(a: &Approval) -> String {
    let diff = a.change.get("diff").filter(|d| !d.is_null());
    let shown = diff.or_else(|| a.change.get("request_body"));
    shown
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| "(no body)".into())
}

/// Text a requester or an approver wrote (a justification, a comment, an app's display name in
/// a token), made inert for Teams' Markdown: the characters that make links, images, emphasis
/// and code escaped with a backslash (CommonMark's rule), and `://` broken
/// with a zero-width space so a URL in it is not made a link. Approvers read these messages and
/// click their links: a justification must not be able to carry one.
pub(crate) fn teams_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_[]()<>~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.replace("://", ":\u{200b}//")
}

/// The same for Slack's `mrkdwn`: `&`, `<` and `>` as entities (Slack's own rule: `<...>` is how
/// a link or a mention is written), and `://` broken as for Teams.
pub(crate) fn slack_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace("://", ":\u{200b}//")
}

fn teams(what: Announce, a: &Approval, link: Option<&str>) -> Value {
    let facts: Vec<Value> = facts(a)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": teams_text(&value)}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
             "text": teams_text(&headline(what, a))},
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "text": "Diff", "weight": "Bolder"},
            {"type": "TextBlock", "fontType": "Monospace", "wrap": true,
             "text": teams_text(&diff_text(a))},
        ],
    });
    if let Some(link) = link {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open the approval", "url": link}]);
    }
    json!({
        "type": "message",
        "summary": headline(what, a),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn slack(what: Announce, a: &Approval, link: Option<&str>) -> Value {
    let fields: Vec<Value> = facts(a)
        .into_iter()
        .map(|(name, value)| {
            json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_text(&value))})
        })
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&headline(what, a), 150)}}),
    ];
    // Slack takes at most ten fields per section.
    for chunk in fields.chunks(10) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
        "text": format!("```{}```", slack_text(&cut(&diff_text(a), 2900)))}}));
    if let Some(link) = link {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("<{link}|Open the approval>")}}));
    }
    json!({"text": slack_text(&headline(what, a)), "blocks": blocks})
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// What `/metrics` shows of deliveries, per webhook.
#[derive(Debug, Clone, Default)]
pub(crate) struct NotifyInstruments {
    pub(crate) delivered: Family<WebhookLabel, Counter>,
    pub(crate) failed: Family<WebhookLabel, Counter>,
    /// Requests pending, and notices waiting: read from the store after each round.
    pub(crate) pending: Gauge,
    pub(crate) waiting: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct WebhookLabel {
    pub(crate) webhook: String,
}

/// How long to wait after the `attempts`-th failure: a second, doubling, at most [`RETRY_MAX`].
pub(crate) fn backoff(attempts: i64) -> Duration {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(1)
        .saturating_mul(1u32 << exponent.min(16))
        .min(RETRY_MAX)
}

/// The delivery task: until `stop`, send the notices that are due, wake on `wake` (a new
/// notice) or every [`POLL`].
pub(crate) fn spawn(
    store: Store,
    webhooks: Vec<Webhook>,
    wake: Arc<tokio::sync::Notify>,
    instruments: NotifyInstruments,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Every configured webhook's series from the start, at 0, so an alert on failures works
    // before the first one.
    for hook in &webhooks {
        let label = WebhookLabel {
            webhook: hook.name.clone(),
        };
        let _ = instruments.delivered.get_or_create(&label);
        let _ = instruments.failed.get_or_create(&label);
    }
    tokio::spawn(async move {
        let client = client();
        loop {
            // Stopping does not wait for a webhook's answer: a notice sent but not recorded as
            // delivered is sent again after the restart (delivery is at least once).
            tokio::select! {
                () = stop.cancelled() => return,
                () = deliver_due(&store, &webhooks, &client, &instruments, &stop) => {}
            }
            if let Ok((pending, waiting, _)) = store.reader().approval_gauges().await {
                instruments.pending.set(pending);
                instruments.waiting.set(waiting);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let tls = crate::tls::client_config(None)
        .unwrap_or_else(|_| unreachable!("the built-in roots always load"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Send what is due now: the head of each webhook's queue, every webhook at once (a webhook that
/// hangs until its timeout holds up only its own notices), round after round while some of them
/// get through; each attempt is recorded.
async fn deliver_due(
    store: &Store,
    webhooks: &[Webhook],
    client: &HttpClient,
    instruments: &NotifyInstruments,
    stop: &CancellationToken,
) {
    loop {
        let now = clock::now();
        let due = match store.reader().notices_due(&now, QUEUES).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "approvals: cannot read the webhook outbox");
                return;
            }
        };
        if due.is_empty() || stop.is_cancelled() {
            return;
        }
        let mut sending = tokio::task::JoinSet::new();
        for notice in due {
            let hook = webhooks.iter().find(|w| w.name == notice.webhook).cloned();
            let client = client.clone();
            sending.spawn(async move {
                let outcome = match &hook {
                    Some(hook) => send(&client, hook, &notice).await,
                    // A webhook removed from the configuration: its notices wait in case it
                    // returns.
                    None => Err(format!(
                        "webhook {:?} is not configured any more",
                        notice.webhook
                    )),
                };
                (notice, outcome)
            });
        }
        let mut delivered = false;
        while let Some(joined) = sending.join_next().await {
            let Ok((notice, outcome)) = joined else {
                continue;
            };
            delivered |= outcome.is_ok();
            if let Err(error) = record(store, instruments, &notice, outcome).await {
                tracing::warn!(%error, "approvals: cannot record a webhook delivery");
                return;
            }
        }
        if !delivered {
            return;
        }
    }
}

/// Count an attempt at `notice` and record it: delivered, or due again after its backoff.
async fn record(
    store: &Store,
    instruments: &NotifyInstruments,
    notice: &StoredNotice,
    outcome: Result<(), String>,
) -> Result<(), crate::store::StoreError> {
    let label = WebhookLabel {
        webhook: notice.webhook.clone(),
    };
    let at = clock::now();
    let outcome = match outcome {
        Ok(()) => {
            instruments.delivered.get_or_create(&label).inc();
            Ok(())
        }
        Err(error) => {
            instruments.failed.get_or_create(&label).inc();
            let wait = backoff(notice.attempts + 1);
            tracing::warn!(webhook = %notice.webhook, approval = %notice.approval_id,
                attempts = notice.attempts + 1, %error, "approvals: webhook delivery failed");
            let next = at + chrono::Duration::from_std(wait).unwrap_or_default();
            Err((error, next))
        }
    };
    store
        .record_notice(NoticeAttempt {
            id: notice.id.clone(),
            at,
            outcome,
        })
        .await
}

/// POST one notice; `Ok` when the webhook answered 2xx within its timeout.
async fn send(client: &HttpClient, hook: &Webhook, notice: &StoredNotice) -> Result<(), String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(hook.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("syncgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(notice.body.clone())))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(hook.timeout, async {
        let resp = client.request(req).await.map_err(|e| {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        })?;
        let status = resp.status();
        // Drain a little of the answer so the connection can be reused; ignore what it says.
        let _ = http_body_util::Limited::new(resp.into_body(), 16 * 1024)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    })
    .await;
    match answer {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", hook.timeout)),
    }
}
