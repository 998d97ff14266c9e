//! The gate's decisions without I/O: who may vote, what votes decide, what a request is bound
//! to, and the notices' shapes.

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

use super::notify::{self, Announce};
use super::policy::WebhookFormat;
use super::*;
use crate::audit::Actor;

fn policy(required: u32, one_from_each: &[&str]) -> Policy {
    Policy {
        name: "default".into(),
        required,
        approvers: Vec::new(),
        groups: Vec::new(),
        one_from_each: one_from_each.iter().map(|g| (*g).to_owned()).collect(),
        vote_window_seconds: 3600,
        send_window_seconds: 600,
        require_justification: false,
        require_ticket: false,
        ticket_pattern: None,
    }
}

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + Duration::minutes(minute)
}

fn requester() -> Requester {
    Requester::of(&Actor {
        oid: Some("11111111-1111-1111-1111-111111111111".into()),
        upn: Some("ann@contoso.example".into()),
        idtyp: Some("user".into()),
        client_cert_subject: Some("CN=ann-laptop".into()),
        ..Actor::default()
    })
    .unwrap()
}

fn request(policy: Policy) -> Approval {
    Approval {
        id: new_id(),
        operation_id: uuid::Uuid::now_v7().to_string(),
        created: at(0),
        status: Status::Pending,
        version: 1,
        policy,
        rule: "sync-allowlist".into(),
        binding: Binding {
            method: "PUT".into(),
            canonical_path:
                "/v1.0/policies/crosstenantaccesspolicy/partners/p/identitysynchronization".into(),
            partner: Some("p".into()),
            body_hash: hash_json(&json!({"displayName": "F"})),
            before_hash: hash_json(&serde_json::Value::Null),
            requester: requester(),
        },
        justification: None,
        ticket: None,
        vote_deadline: at(0) + Duration::hours(1),
        send_deadline: None,
        decided: None,
        used_by: None,
        change: json!({"request_body": {"displayName": "F"}, "before": null, "diff": [], "message": null}),
        votes: Vec::new(),
    }
}

fn vote(name: &str, oid: &str, groups: &[&str], ballot: Ballot) -> Vote {
    Vote {
        principal: name.into(),
        oid: oid.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ballot,
        comment: None,
        time: at(1),
    }
}

fn voter<'a>(name: &'a str, oid: Option<&'a str>, groups: &'a [String]) -> Voter<'a> {
    Voter {
        name,
        oid,
        groups,
        cert_subject: None,
    }
}

#[test]
fn m_distinct_approvers_approve_and_one_rejection_rejects() {
    let mut a = request(policy(2, &[]));
    assert_eq!(
        a.tally(),
        Tally::Open {
            approvals: 0,
            missing_groups: vec![]
        }
    );
    a.votes.push(vote("ann", "a", &[], Ballot::Approve));
    assert_eq!(a.progress(), "1 of 2 approvals");
    a.votes.push(vote("bob", "b", &[], Ballot::Approve));
    assert_eq!(a.tally(), Tally::Approved);
    a.votes.push(vote("cy", "c", &[], Ballot::Reject));
    assert_eq!(
        a.tally(),
        Tally::Rejected,
        "a rejection wins whenever it comes"
    );
    assert_eq!(a.rejection().unwrap().principal, "cy");
}

#[test]
fn one_person_under_two_principal_names_counts_once() {
    let mut a = request(policy(2, &[]));
    a.votes.push(vote("ann", "a", &[], Ballot::Approve));
    a.votes.push(vote("ann-admin", "a", &[], Ballot::Approve));
    assert!(matches!(a.tally(), Tally::Open { approvals: 1, .. }));
}

#[test]
fn one_from_each_group_is_needed_besides_the_count() {
    let mut a = request(policy(2, &["security", "identity"]));
    a.votes
        .push(vote("ann", "a", &["security"], Ballot::Approve));
    a.votes
        .push(vote("bob", "b", &["security"], Ballot::Approve));
    assert_eq!(
        a.tally(),
        Tally::Open {
            approvals: 2,
            missing_groups: vec!["identity".into()]
        }
    );
    assert_eq!(
        a.progress(),
        "2 of 2 approvals, and one from each of identity"
    );
    a.votes
        .push(vote("cy", "c", &["identity"], Ballot::Approve));
    assert_eq!(a.tally(), Tally::Approved);
}

#[test]
fn nobody_votes_on_their_own_request_or_without_an_oid_or_twice() {
    let no_groups: Vec<String> = Vec::new();
    let mut a = request(policy(1, &[]));
    let own = voter(
        "self",
        Some("11111111-1111-1111-1111-111111111111"),
        &no_groups,
    );
    assert_eq!(a.may_vote(&own, at(5)), Err(NoVote::OwnRequest));
    let same_cert = Voter {
        cert_subject: Some("cn=ANN-laptop".into()),
        ..voter("other", Some("o"), &no_groups)
    };
    assert_eq!(a.may_vote(&same_cert, at(5)), Err(NoVote::OwnRequest));
    assert_eq!(
        a.may_vote(&voter("x", None, &no_groups), at(5)),
        Err(NoVote::UnknownOid)
    );
    let ann = voter("ann", Some("a"), &no_groups);
    assert_eq!(a.may_vote(&ann, at(5)), Ok(()));
    a.votes.push(vote("ann", "a", &[], Ballot::Approve));
    assert_eq!(
        a.may_vote(&ann, at(5)),
        Err(NoVote::AlreadyVoted(Ballot::Approve))
    );
    assert_eq!(a.may_vote(&ann, at(60)), Err(NoVote::Expired));
    a.status = Status::Approved;
    assert_eq!(
        a.may_vote(&voter("bob", Some("b"), &no_groups), at(5)),
        Err(NoVote::NotPending(Status::Approved))
    );
}

#[test]
fn a_policy_naming_approvers_or_groups_admits_only_them() {
    let mut p = policy(1, &[]);
    assert!(p.names("anyone", &[]), "no list: every approver");
    p.approvers = vec!["ann".into()];
    p.groups = vec!["security".into()];
    assert!(p.names("ann", &[]));
    assert!(p.names("bob", &["security".into()]));
    assert!(!p.names("bob", &["identity".into()]));
    let a = request(p);
    let groups = vec!["identity".to_owned()];
    assert_eq!(
        a.may_vote(&voter("bob", Some("b"), &groups), at(5)),
        Err(NoVote::NotAnApprover)
    );
}

#[test]
fn a_requester_is_its_user_or_for_app_only_tokens_its_application() {
    let user = Requester::of(&Actor {
        oid: Some("AAAAAAAA-0000-4000-8000-000000000001".into()),
        appid: Some("app".into()),
        idtyp: Some("user".into()),
        ..Actor::default()
    })
    .unwrap();
    assert_eq!(user.key, "oid:aaaaaaaa-0000-4000-8000-000000000001");
    let app = Requester::of(&Actor {
        oid: Some("sp-oid".into()),
        appid: Some("APP-ID".into()),
        app_displayname: Some("Provisioning".into()),
        idtyp: Some("app".into()),
        ..Actor::default()
    })
    .unwrap();
    assert_eq!(app.key, "appid:app-id");
    assert_eq!(app.shown(), "Provisioning (appid:app-id)");
    assert_eq!(Requester::of(&Actor::default()), None);
}

#[test]
fn a_body_hashes_the_same_however_it_is_laid_out() {
    let a: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}}"#).unwrap();
    let b: serde_json::Value =
        serde_json::from_str("{\n  \"a\": {\"x\": 3, \"y\": 2},\n  \"b\": 1\n}").unwrap();
    assert_eq!(hash_json(&a), hash_json(&b));
    assert_ne!(
        hash_json(&a),
        hash_json(&json!({"b": 2, "a": {"x": 3, "y": 2}}))
    );
    assert!(hash_json(&a).starts_with("sha256:"));
    assert_ne!(
        hash_state(&crate::audit::Snapshot::Absent),
        hash_state(&crate::audit::Snapshot::Present { value: json!({}) })
    );
}

#[test]
fn every_status_and_ballot_reads_back_as_written() {
    for status in Status::ALL {
        assert_eq!(Status::parse(status.as_str()), Some(status));
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
    for ballot in [Ballot::Approve, Ballot::Reject] {
        assert_eq!(Ballot::parse(ballot.as_str()), Some(ballot));
    }
    assert_eq!(Status::parse("Pending"), None);
}

#[test]
fn held_reasons_are_403_holds_except_the_callers_missing_input_and_a_flood() {
    use http::StatusCode;
    assert_eq!(
        HeldReason::Required.code(),
        ("SyncgateApprovalRequired", StatusCode::FORBIDDEN)
    );
    assert_eq!(
        HeldReason::Used.code(),
        ("SyncgateApprovalUsed", StatusCode::FORBIDDEN)
    );
    assert_eq!(
        HeldReason::TooManyPending.code().1,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        HeldReason::TicketRequired.code(),
        ("SyncgateTicketRequired", StatusCode::BAD_REQUEST)
    );
}

#[test]
fn notices_name_the_change_and_link_to_the_request() {
    let mut a = request(policy(2, &[]));
    a.justification = Some("new partner onboarding".into());
    let link = Some("https://admin.example/api/v1/approvals/x");
    let doc = notify::body(WebhookFormat::Json, Announce::Requested, &a, link);
    assert_eq!(doc["type"], "syncgate.approval");
    assert_eq!(doc["event"], "requested");
    assert_eq!(doc["approval"]["justification"], "new partner onboarding");
    a.status = Status::Rejected;
    let doc = notify::body(WebhookFormat::Json, Announce::Decided, &a, link);
    assert_eq!(doc["event"], "rejected");
    let teams = notify::body(WebhookFormat::Teams, Announce::Decided, &a, link).to_string();
    assert!(teams.contains("Rejected: PUT"), "{teams}");
    assert!(teams.contains("new partner onboarding"), "{teams}");
    let slack = notify::body(WebhookFormat::Slack, Announce::Requested, &a, None);
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("Approval requested: PUT")
    );
    // Slack takes at most ten fields per section.
    for block in slack["blocks"].as_array().unwrap() {
        assert!(block["fields"].as_array().is_none_or(|f| f.len() <= 10));
    }
}

#[test]
fn webhook_retries_back_off_from_a_second_to_ten_minutes() {
    assert_eq!(notify::backoff(1), std::time::Duration::from_secs(1));
    assert_eq!(notify::backoff(2), std::time::Duration::from_secs(2));
    assert_eq!(notify::backoff(5), std::time::Duration::from_secs(16));
    assert_eq!(notify::backoff(40), std::time::Duration::from_secs(600));
}

#[test]
fn text_from_requesters_and_approvers_cannot_make_links_in_chat_messages() {
    let mut a = request(policy(1, &[]));
    a.justification =
        Some("[Approve now](https://evil.example) <https://evil.example|ok> *x*".into());
    a.votes.push(Vote {
        comment: Some("see <!channel> https://evil.example/a".into()),
        ..vote("ann", "a", &[], Ballot::Approve)
    });
    let teams = notify::body(WebhookFormat::Teams, Announce::Requested, &a, None).to_string();
    assert!(!teams.contains("https://evil"), "{teams}");
    assert!(!teams.contains("[Approve now](http"), "{teams}");
    assert!(teams.contains(r"\\[Approve now\\]"), "{teams}");
    let slack = notify::body(WebhookFormat::Slack, Announce::Requested, &a, None).to_string();
    assert!(
        !slack.contains("<https://evil") && !slack.contains("<!channel>"),
        "{slack}"
    );
    assert!(!slack.contains("https://evil"), "{slack}");
    assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
    // The JSON document is data: it keeps the text exactly, for the receiver to escape.
    let doc = notify::body(WebhookFormat::Json, Announce::Requested, &a, None);
    assert_eq!(
        doc["approval"]["justification"],
        a.justification.clone().unwrap()
    );
    // Syncgate's own link is still a link.
    let link = Some("https://admin.example/api/v1/approvals/x");
    let slack = notify::body(WebhookFormat::Slack, Announce::Requested, &a, link).to_string();
    assert!(slack.contains("<https://admin.example/api/v1/approvals/x|Open the approval>"));
}
