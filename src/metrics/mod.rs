//! What `GET /metrics` on the admin listener shows: counters and histograms of one running
//! syncgate, in Prometheus' text format (or OpenMetrics when the scraper asks for it).
//!
//! Why an instance, not a process-wide recorder: a test binary starts many proxies, and a
//! process may embed more than one (the demo runs an emulator beside the proxy), so each
//! [`Metrics`] owns its own `prometheus_client` registry, built in [`crate::app::start`] and
//! handed to the parts that count. Nothing here is global; two proxies never share a counter.
//!
//! Recording costs an atomic add (histograms: one uncontended lock) and, for labelled counters,
//! one read-locked hash lookup of a label set built from fixed enums ([`labels`]): no allocation
//! and a bounded number of series on the request path. The list of metrics, their labels and
//! meaning is `docs/metrics.md`; a test keeps that list and this module in step.

mod labels;
mod scraped;

use std::time::{Duration, Instant};

use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::audit::Effect;
use crate::rules::{Evaluation, Verdict};
use crate::store::Store;
use labels::{
    DecisionLabel, DecisionLabels, Direction, DirectionLabels, EffectLabels, EgressLabels,
    ListenerLabels, RequestLabels, RuleLabels, RuleNames, RuleOutcome, StatusLabel,
    UpstreamFailureLabels,
};
pub(crate) use labels::{EgressOutcome, ListenerLabel, RouteClass, UpstreamFailure};

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0 text (ends in `# EOF`, so a cut-off scrape is detectable).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (Prometheus' own scraper does), else the
    /// Prometheus text format every scraper reads.
    pub(crate) fn negotiate(accept: Option<&http::HeaderValue>) -> Self {
        let asks = accept
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/openmetrics-text"));
        if asks {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One syncgate's metrics: the registry `/metrics` renders, and the handles that count into it.
/// Each field is registered once, in [`Metrics::new`]; the handles share their values with it.
pub(crate) struct Metrics {
    registry: Registry,
    /// Proxy requests answered, by how the classifier routed them and the status sent.
    requests: Family<RequestLabels, Counter>,
    /// Governed changes decided, by the rules' verdict.
    decisions: Family<DecisionLabels, Counter>,
    /// Each rule's result on each governed change, by rule id, mode and pass/fail.
    rule_results: Family<RuleLabels, Counter>,
    /// Interned rule ids (bounded), so a rule label costs no allocation.
    rule_names: RuleNames,
    /// Governed changes refused with 503 because the audit log could not take them.
    audit_unavailable: Counter,
    /// Access-log lines dropped because the writer could not keep up ([`crate::access_log`]).
    pub(crate) access_log_dropped: Counter,
    /// Before-states that differed from the last state recorded (changes made around syncgate).
    drift: Counter,
    /// Completed changes by effect (intent versus what the after-state shows).
    effects: Family<EffectLabels, Counter>,
    /// Seconds from sending a request upstream to its response head.
    upstream_seconds: Histogram,
    /// Upstream requests that got no response head, by why.
    upstream_failures: Family<UpstreamFailureLabels, Counter>,
    /// Connections open now, per listener (set by each listener's tracker).
    connections: Family<ListenerLabels, Gauge>,
    /// Egress mode's `CONNECT`s, by how they were answered.
    egress_connects: Family<EgressLabels, Counter>,
    /// Bytes carried by tunnels (not intercepted ones), by direction.
    egress_tunnel_bytes: Family<DirectionLabels, Counter>,
    /// Tunnels and intercepted sessions open now.
    egress_open: Family<EgressLabels, Gauge>,
    /// The approval gate: requests pending, webhook notices waiting, deliveries and failures
    /// (kept by the notices' delivery task, `approvals/notify.rs`).
    pub(crate) approvals: crate::approvals::notify::NotifyInstruments,
}

impl Metrics {
    /// A registry for one syncgate, with the writer's instruments and queue of `store` when
    /// given (a part started without a store, such as a lone upstream client in a test,
    /// counts into a registry nobody scrapes).
    pub(crate) fn new(store: Option<&Store>) -> Self {
        let mut registry = Registry::with_prefix("syncgate");
        let metrics = Self {
            requests: Family::default(),
            decisions: Family::default(),
            rule_results: Family::default(),
            rule_names: RuleNames::default(),
            audit_unavailable: Counter::default(),
            access_log_dropped: Counter::default(),
            drift: Counter::default(),
            effects: Family::default(),
            // 5 ms to about 41 s: a local emulator to Graph's slowest answers and the timeout.
            upstream_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            upstream_failures: Family::default(),
            connections: Family::default(),
            egress_connects: Family::default(),
            egress_tunnel_bytes: Family::default(),
            egress_open: Family::default(),
            approvals: Default::default(),
            registry: Registry::default(),
        };
        metrics.start_at_zero();
        metrics.register(&mut registry);
        if let Some(store) = store {
            let instruments = store.instruments();
            registry.register_with_unit(
                "store_append",
                "Time from an audit event's append to its durable commit (queue wait included)",
                Unit::Seconds,
                instruments.append_seconds.clone(),
            );
            registry.register(
                "store_group_size",
                "Events committed together in one audit-log transaction",
                instruments.group_size.clone(),
            );
            registry.register(
                "store_append_failures",
                "Audit events the log could not take",
                instruments.append_failures.clone(),
            );
            registry.register(
                "store_checkpoints",
                "Checkpoints of the audit log's Merkle tree this writer signed and stored",
                instruments.checkpoints.clone(),
            );
            registry.register(
                "store_checkpoint_failures",
                "Checkpoints due that could not be signed or stored",
                instruments.checkpoint_failures.clone(),
            );
            registry.register(
                "witness_deliveries",
                "Signed checkpoints delivered to a witness",
                instruments.witness_deliveries.clone(),
            );
            registry.register(
                "witness_failures",
                "Attempts to deliver a checkpoint to a witness that failed (it stays queued)",
                instruments.witness_failures.clone(),
            );
        }
        registry.register_collector(Box::new(scraped::Scraped::new(
            store.cloned(),
            Instant::now(),
        )));
        Self {
            registry,
            ..metrics
        }
    }

    /// Series whose labels are known in advance are shown from the start at 0, so a rate or
    /// an alert on them works before the first event (requests and rules appear when seen).
    fn start_at_zero(&self) {
        for decision in DecisionLabel::ALL {
            let _ = self.decisions.get_or_create(&DecisionLabels { decision });
        }
        for effect in Effect::ALL {
            let _ = self.effects.get_or_create(&EffectLabels { effect });
        }
        for reason in UpstreamFailure::ALL {
            let _ = self
                .upstream_failures
                .get_or_create(&UpstreamFailureLabels { reason });
        }
        for outcome in EgressOutcome::ALL {
            let _ = self
                .egress_connects
                .get_or_create(&EgressLabels { outcome });
        }
        for direction in [Direction::Up, Direction::Down] {
            let _ = self
                .egress_tunnel_bytes
                .get_or_create(&DirectionLabels { direction });
        }
        for outcome in [EgressOutcome::Intercepted, EgressOutcome::Tunnelled] {
            let _ = self.egress_open.get_or_create(&EgressLabels { outcome });
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "build",
            "The running syncgate's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "requests",
            "Proxy requests answered, by route class and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "governed_decisions",
            "Governed changes decided by the local rules, by verdict",
            self.decisions.clone(),
        );
        registry.register(
            "rule_results",
            "Rule results on governed changes, by rule id, mode and result",
            self.rule_results.clone(),
        );
        registry.register(
            "audit_unavailable_refusals",
            "Governed changes refused because the audit log could not record them",
            self.audit_unavailable.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the disk could not keep up",
            self.access_log_dropped.clone(),
        );
        registry.register(
            "drift_detected",
            "Governed changes whose before-state differed from the last recorded state",
            self.drift.clone(),
        );
        registry.register(
            "governed_effects",
            "Governed changes that went upstream, by effect (intent versus after-state)",
            self.effects.clone(),
        );
        registry.register_with_unit(
            "upstream_response",
            "Time from sending a request upstream to its response head",
            Unit::Seconds,
            self.upstream_seconds.clone(),
        );
        registry.register(
            "upstream_failures",
            "Upstream requests that got no response head, by reason",
            self.upstream_failures.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now, by listener",
            self.connections.clone(),
        );
        registry.register(
            "egress_connects",
            "CONNECT requests egress mode answered, by outcome",
            self.egress_connects.clone(),
        );
        registry.register_with_unit(
            "egress_tunnel",
            "Bytes carried by tunnels to hosts that are not intercepted, by direction",
            Unit::Bytes,
            self.egress_tunnel_bytes.clone(),
        );
        registry.register(
            "egress_open",
            "Tunnels (tunnelled) and intercepted sessions open now",
            self.egress_open.clone(),
        );
        let approvals = &self.approvals;
        registry.register(
            "approvals_pending",
            "Approval requests waiting for votes (as of the last look at the outbox)",
            approvals.pending.clone(),
        );
        registry.register(
            "webhook_notices_waiting",
            "Approval notices in the outbox not delivered yet",
            approvals.waiting.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Approval notices delivered, by webhook",
            approvals.delivered.clone(),
        );
        registry.register(
            "webhook_failures",
            "Failed attempts to deliver approval notices, by webhook",
            approvals.failed.clone(),
        );
    }

    /// A proxy request was answered with `status`.
    pub(crate) fn request(&self, route: RouteClass, status: http::StatusCode) {
        let labels = RequestLabels {
            route,
            status: StatusLabel::new(status),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The rules decided a governed change: its verdict, and each rule's result.
    pub(crate) fn decided(&self, evaluation: &Evaluation) {
        let decision = match evaluation.verdict() {
            Verdict::Allow { .. } => DecisionLabel::Allow,
            Verdict::Deny(_) => DecisionLabel::Deny,
            Verdict::NeedsApproval(_) => DecisionLabel::RequireApproval,
        };
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
        for result in &evaluation.results {
            let labels = RuleLabels {
                rule: self.rule_names.label(&result.rule),
                mode: result.mode,
                result: if result.passed {
                    RuleOutcome::Pass
                } else {
                    RuleOutcome::Fail
                },
            };
            self.rule_results.get_or_create(&labels).inc();
        }
    }

    /// A governed change was refused because the audit log could not take it.
    pub(crate) fn audit_unavailable_refusal(&self) {
        self.audit_unavailable.inc();
    }

    /// A before-state differed from the last state recorded for it.
    pub(crate) fn drift_detected(&self) {
        self.drift.inc();
    }

    /// A governed change that went upstream ended with `effect`.
    pub(crate) fn effect(&self, effect: Effect) {
        self.effects.get_or_create(&EffectLabels { effect }).inc();
    }

    /// An upstream request got its response head after `elapsed`.
    pub(crate) fn upstream_answered(&self, elapsed: Duration) {
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    /// An upstream request got no response head.
    pub(crate) fn upstream_failed(&self, reason: UpstreamFailure) {
        self.upstream_failures
            .get_or_create(&UpstreamFailureLabels { reason })
            .inc();
    }

    /// Egress mode answered a `CONNECT` with `outcome`.
    pub(crate) fn egress_connect(&self, outcome: EgressOutcome) {
        self.egress_connects
            .get_or_create(&EgressLabels { outcome })
            .inc();
    }

    /// A tunnel carried `up` and `down` bytes (counted when it ends).
    pub(crate) fn egress_tunnel_bytes(&self, up: u64, down: u64) {
        for (direction, bytes) in [(Direction::Up, up), (Direction::Down, down)] {
            self.egress_tunnel_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(bytes);
        }
    }

    /// The gauge of open tunnels (`Tunnelled`) or intercepted sessions (`Intercepted`).
    pub(crate) fn egress_open(&self, kind: EgressOutcome) -> Gauge {
        self.egress_open
            .get_or_create(&EgressLabels { outcome: kind })
            .clone()
    }

    /// The gauge `listener`'s tracker keeps at its open connection count.
    pub(crate) fn open_connections(&self, listener: ListenerLabel) -> Gauge {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// Every metric, in `format`.
    pub(crate) fn render(&self, format: Format) -> String {
        let mut text = String::with_capacity(8 * 1024);
        let encoded = match format {
            Format::Prometheus => prometheus_text::encode(&mut text, &self.registry),
            Format::OpenMetrics => openmetrics_text::encode(&mut text, &self.registry),
        };
        // Writing into a String cannot fail; a label that could not be encoded is a bug, and
        // the scrape then shows what was written before it rather than nothing.
        if let Err(error) = encoded {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests;
