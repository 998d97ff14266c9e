//! `syncgate audit show`: one operation, readable at a glance — a header, its events, the
//! states before and after, the changes, and the rules that decided.

use std::fmt::Write as _;

use anyhow::{Context, anyhow};
use serde_json::Value;
use uuid::Uuid;

use super::ShowFormat;
use crate::audit::{Decision, Event, Recorded, RuleOutcome, Snapshot};
use crate::cli::render::{
    FIXED, JsonArray, JsonLayout, actor_name, dash, effect_name, fitted_table, human_duration,
    print, short_version, terminal_columns, time_micros,
};
use crate::store::StoreReader;

pub(super) async fn run(
    reader: &StoreReader,
    operation_id: Uuid,
    format: ShowFormat,
) -> anyhow::Result<()> {
    let events = reader
        .operation(operation_id)
        .await
        .with_context(|| format!("cannot read {}", reader.location()))?;
    if events.is_empty() {
        return Err(anyhow!(
            "no operation {operation_id} in {}",
            reader.location()
        ));
    }
    let text = match format {
        ShowFormat::Json => JsonArray::document(&events, JsonLayout::for_stdout())?,
        ShowFormat::Text => render_operation(&events, terminal_columns()),
    };
    print(&text)
}

/// One operation, readable at a glance: a header, its events, the states, the changes. The
/// events table is cut to fit `columns` (a terminal's width; `None` through a pipe).
fn render_operation(events: &[Recorded], columns: Option<usize>) -> String {
    let mut s = String::new();
    if events.is_empty() {
        return s;
    }
    describe_request(&mut s, events);
    describe_outcome(&mut s, events);
    describe_events(&mut s, events, columns);
    describe_states(&mut s, events);
    describe_rules(&mut s, events);
    s
}

/// One header line: a label, then its value.
fn line(s: &mut String, label: &str, value: String) {
    let _ = writeln!(s, "{label:<12}{value}");
}

/// The latest event that says something wins for the outcome fields.
fn latest(events: &[Recorded], f: impl Fn(&Event) -> Option<String>) -> Option<String> {
    events.iter().rev().find_map(|r| f(&r.event))
}

/// What was asked: the operation, the change, and for a refusal what is known of the request.
fn describe_request(s: &mut String, events: &[Recorded]) {
    let e = &events[0].event;
    line(s, "operation", e.operation_id.to_string());
    line(
        s,
        "change",
        format!(
            "{}  {} {}",
            dash(Some(e.operation.as_str())),
            dash(Some(&e.method)),
            dash(Some(&e.canonical_path))
        ),
    );
    if let Some(raw) = events.iter().find_map(|r| r.event.raw_request.as_ref()) {
        // A refusal: the target as the client sent it, and what is known of its body.
        let cut = if raw.target_truncated {
            format!(" (first {} of {} bytes)", raw.target.len(), raw.target_len)
        } else {
            String::new()
        };
        line(s, "target", format!("{}{cut}", raw.target));
        if let Some(body) = &raw.body {
            line(
                s,
                "body",
                format!(
                    "{} bytes, sha256 {}, first {} bytes kept",
                    body.len, body.sha256, body.prefix_len
                ),
            );
        }
    }
    if let Some(summary) = events.iter().find_map(|r| r.event.refusal_summary.as_ref()) {
        line(
            s,
            "refusals",
            format!(
                "{} from {} between {} and {}",
                summary.count,
                summary.client,
                time_micros(&summary.first),
                time_micros(&summary.last)
            ),
        );
    }
}

/// Who, when, and how it ended.
fn describe_outcome(s: &mut String, events: &[Recorded]) {
    let (first, last) = (&events[0].event, &events[events.len() - 1].event);
    line(s, "partner", dash(first.partner_tenant_id.as_deref()));
    line(s, "actor", describe_actor(first));
    let time = if events.len() == 1 {
        time_micros(&first.time)
    } else {
        format!(
            "{} → {} ({})",
            time_micros(&first.time),
            time_micros(&last.time),
            human_duration(last.time - first.time)
        )
    };
    line(s, "time", time);
    let kinds: Vec<&str> = events.iter().map(|r| r.event.kind.as_str()).collect();
    line(s, "kind", kinds.join(" → "));
    let decision = latest(events, |e| e.decision.map(|d| d.as_str().to_owned()));
    line(s, "decision", dash(decision.as_deref()));
    let status = latest(events, |e| e.upstream_status.map(|s| s.to_string()));
    line(s, "status", dash(status.as_deref()));
    line(
        s,
        "effect",
        dash(latest(events, |e| e.effect.map(effect_name)).as_deref()),
    );
    if let Some(latency) = latest(events, |e| e.latency_ms.map(|l| l.to_string())) {
        let upstream = latest(events, |e| e.upstream_latency_ms.map(|l| l.to_string()))
            .map(|u| format!(" (upstream {u} ms)"))
            .unwrap_or_default();
        line(s, "latency", format!("{latency} ms{upstream}"));
    }
    for (label, value) in [
        ("approval", latest(events, |e| e.approval_id.clone())),
        ("request-id", latest(events, |e| e.request_id.clone())),
        ("client-req", first.client_request_id.clone()),
        ("detail", latest(events, |e| e.detail.clone())),
    ] {
        if let Some(value) = value {
            line(s, label, value);
        }
    }
}

/// The operation's events, one row each, indented under a heading.
fn describe_events(s: &mut String, events: &[Recorded], columns: Option<usize>) {
    s.push_str("\nevents\n");
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|r| {
            [
                r.seq.to_string(),
                time_micros(&r.event.time),
                r.event.kind.as_str().to_owned(),
                dash(r.event.decision.map(Decision::as_str)),
                dash(r.event.upstream_status.map(|s| s.to_string()).as_deref()),
                dash(r.event.detail.as_deref()),
            ]
        })
        .collect();
    let header = ["seq", "time", "kind", "decision", "status", "detail"];
    // Only the detail is ever cut; the table is indented by two columns.
    let floors = [FIXED, FIXED, FIXED, FIXED, FIXED, 20];
    let columns = columns.map(|c| c.saturating_sub(2));
    for l in fitted_table(&header, &rows, &floors, columns).lines() {
        let _ = writeln!(s, "  {l}");
    }
}

/// The request body, the states before and after, and the changes between them.
fn describe_states(s: &mut String, events: &[Recorded]) {
    if let Some(body) = events.iter().find_map(|r| r.event.request_body.as_ref()) {
        s.push_str("\nrequest body\n");
        indent_json(s, body);
    }
    let before = events.iter().find_map(|r| r.event.before.as_ref());
    let after = events.iter().rev().find_map(|r| r.event.after.as_ref());
    if let Some(before) = before {
        s.push_str("\nbefore\n");
        describe_snapshot(s, before);
    }
    if let Some(after) = after {
        s.push_str("\nafter\n");
        describe_snapshot(s, after);
    }
    if let Some(diff) = events.iter().rev().find_map(|r| r.event.diff.as_ref()) {
        s.push_str("\nchanges\n");
        let ops = diff.as_array().map(Vec::as_slice).unwrap_or_default();
        if ops.is_empty() {
            s.push_str("  (none: the state did not change)\n");
        }
        for op in ops {
            let _ = writeln!(
                s,
                "  {}",
                describe_patch_op(op, before.and_then(Snapshot::value))
            );
        }
    }
}

/// The rules that decided, as the last event that carries them recorded them.
fn describe_rules(s: &mut String, events: &[Recorded]) {
    let Some(decider) = events
        .iter()
        .rev()
        .find(|r| !r.event.rule_results.is_empty())
    else {
        return;
    };
    let version = decider.event.rules_version.as_deref().unwrap_or("-");
    let _ = writeln!(s, "\nrules (version {})", short_version(version));
    for result in &decider.event.rule_results {
        let _ = writeln!(s, "  {}", describe_rule_result(result));
    }
}

/// One rule's result on one line. A failure names the rule's mode and action and says why
/// (`FAIL  id (enforce, deny): message`); a pass says it passed and, so that the action is not
/// read as what happened, what a failure would have done.
fn describe_rule_result(result: &RuleOutcome) -> String {
    let (rule, mode, action) = (&result.rule, result.mode.as_str(), result.action.as_str());
    if result.passed {
        let would = match (mode, action) {
            ("warn", _) => "warn",
            ("shadow", _) => "only be recorded",
            (_, "require_approval") => "hold the change for approval",
            (_, "deny") => "deny the change",
            (_, other) => other,
        };
        return format!("ok    {rule} passed ({mode} mode: a failure would {would})");
    }
    match result.message.as_deref() {
        Some(message) => format!("FAIL  {rule} ({mode}, {action}): {message}"),
        None => format!("FAIL  {rule} ({mode}, {action})"),
    }
}

fn describe_actor(e: &Event) -> String {
    let a = &e.actor;
    let mut parts = vec![actor_name(e)];
    if let Some(oid) = &a.oid
        && a.upn.is_some()
    {
        parts.push(format!("oid {oid}"));
    }
    if let Some(appid) = &a.appid
        && (a.upn.is_some() || a.oid.is_some())
    {
        parts.push(format!("app {appid}"));
    }
    if let Some(name) = &a.app_displayname {
        parts.push(format!("({name})"));
    }
    if let Some(addr) = &a.caller_address {
        parts.push(format!("from {addr}"));
    }
    if let Some(subject) = &a.client_cert_subject {
        parts.push(format!("cert {subject}"));
    }
    if let Some(user) = &a.proxy_user {
        parts.push(format!("proxy user {user}"));
    }
    parts.join("  ")
}

fn indent_json(s: &mut String, value: &Value) {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    for l in pretty.lines() {
        let _ = writeln!(s, "  {l}");
    }
}

fn describe_snapshot(s: &mut String, snapshot: &Snapshot) {
    match snapshot {
        Snapshot::Present { value } => indent_json(s, value),
        Snapshot::Absent => s.push_str("  (absent: the resource did not exist)\n"),
        Snapshot::Unreadable { status, error } => {
            let status = status.map(|c| format!("status {c}: ")).unwrap_or_default();
            let _ = writeln!(s, "  (unreadable: {status}{error})");
        }
    }
}

/// One RFC 6902 operation on one line, e.g. `replace /userSyncInbound/isSyncAllowed: false → true`.
fn describe_patch_op(op: &Value, before: Option<&Value>) -> String {
    let field = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or_default();
    let compact = |v: Option<&Value>| v.map_or_else(|| "?".to_owned(), Value::to_string);
    let path = field("path");
    let shown = if path.is_empty() {
        "(whole document)"
    } else {
        path
    };
    let old = before.and_then(|b| b.pointer(path));
    match field("op") {
        "replace" => format!(
            "replace {shown}: {} → {}",
            compact(old),
            compact(op.get("value"))
        ),
        "add" => format!("add {shown}: {}", compact(op.get("value"))),
        "remove" => match old {
            Some(old) => format!("remove {shown} (was {old})"),
            None => format!("remove {shown}"),
        },
        "move" | "copy" => format!("{} {} → {shown}", field("op"), field("from")),
        "test" => format!("test {shown}: {}", compact(op.get("value"))),
        other => format!("{other} {shown} {}", compact(op.get("value"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn patch_operations_read_as_one_line_each() {
        let before = json!({"userSyncInbound": {"isSyncAllowed": false}, "name": "x"});
        let op = json!({"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true});
        assert_eq!(
            describe_patch_op(&op, Some(&before)),
            "replace /userSyncInbound/isSyncAllowed: false → true"
        );
        let op = json!({"op": "remove", "path": "/name"});
        assert_eq!(
            describe_patch_op(&op, Some(&before)),
            "remove /name (was \"x\")"
        );
        let op = json!({"op": "add", "path": "/extra", "value": {"a": 1}});
        assert_eq!(describe_patch_op(&op, None), "add /extra: {\"a\":1}");
        let op = json!({"op": "replace", "path": "", "value": {"a": 1}});
        assert_eq!(
            describe_patch_op(&op, Some(&Value::Null)),
            "replace (whole document): null → {\"a\":1}"
        );
    }

    #[test]
    fn a_passing_rule_reads_as_passing_and_a_failing_one_as_failing() {
        let rule = |mode: &str, action: &str, passed: bool| RuleOutcome {
            rule: "sync-allowlist".into(),
            kind: "partner_allowlist".into(),
            mode: mode.into(),
            action: action.into(),
            passed,
            message: (!passed).then(|| "rule 'sync-allowlist': not listed".into()),
        };
        let ok = describe_rule_result(&rule("enforce", "deny", true));
        assert_eq!(
            ok,
            "ok    sync-allowlist passed (enforce mode: a failure would deny the change)"
        );
        assert!(!ok.contains("(enforce, deny)"), "reads like a denial: {ok}");
        assert_eq!(
            describe_rule_result(&rule("enforce", "require_approval", true)),
            "ok    sync-allowlist passed (enforce mode: a failure would hold the change for \
             approval)"
        );
        assert_eq!(
            describe_rule_result(&rule("warn", "deny", true)),
            "ok    sync-allowlist passed (warn mode: a failure would warn)"
        );
        assert_eq!(
            describe_rule_result(&rule("enforce", "deny", false)),
            "FAIL  sync-allowlist (enforce, deny): rule 'sync-allowlist': not listed"
        );
        assert_eq!(
            describe_rule_result(&rule("enforce", "require_approval", false)),
            "FAIL  sync-allowlist (enforce, require_approval): rule 'sync-allowlist': not listed"
        );
        assert_eq!(
            describe_rule_result(&rule("warn", "deny", false)),
            "FAIL  sync-allowlist (warn, deny): rule 'sync-allowlist': not listed"
        );
    }

    #[test]
    fn the_events_table_cuts_only_a_long_detail_to_fit_a_terminal() {
        let mut e = Event::new(Uuid::now_v7(), crate::audit::EventKind::Denied);
        e.detail = Some(format!(
            "Request_BadRequest: {}",
            "a long reason ".repeat(10)
        ));
        let events = [Recorded {
            seq: 7,
            prev_hash: String::new(),
            hash: String::new(),
            event: e,
        }];
        let piped = render_operation(&events, None);
        assert!(piped.contains(&"a long reason ".repeat(9)), "{piped}");
        let shown = render_operation(&events, Some(100));
        let table: Vec<&str> = shown
            .lines()
            .skip_while(|l| *l != "events")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(table.len(), 2, "{shown}");
        for line in &table {
            assert!(line.chars().count() <= 100, "{line}");
        }
        assert!(
            table[1].contains(" denied ") && table[1].ends_with('…'),
            "{shown}"
        );
        // The header still says everything in full.
        assert!(
            shown.contains("detail      Request_BadRequest: a long reason"),
            "{shown}"
        );
    }
}
