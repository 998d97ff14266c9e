//! `syncgate audit list|show|verify`, run as a user runs them, over a log written with the
//! library's `Store` in each test's own temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use syncgate::audit::{Actor, Decision, Effect, Event, EventKind, Recorded, Snapshot};
use syncgate::store::{Store, StoreOptions};
use tempfile::TempDir;
use uuid::Uuid;

use crate::harness::syncgate_bin;

const PARTNER_A: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const PARTNER_B: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";
const BOB_OID: &str = "44444444-4444-4444-8444-444444444444";
const AUTOMATION_APP: &str = "33333333-3333-4333-8333-333333333333";

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn audit(args: &[&str]) -> Run {
    let out = Command::new(syncgate_bin())
        .arg("audit")
        .args(args)
        .env_remove("SYNCGATE_CONFIG")
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `audit <args> --db <db>`.
fn audit_db(db: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--db", db.to_str().unwrap()]);
    audit(&all)
}

fn event(operation_id: Uuid, kind: EventKind, day: u32, hour: u32) -> Event {
    let mut e = Event::new(operation_id, kind);
    e.time = Utc.with_ymd_and_hms(2025, 6, day, hour, 0, 0).unwrap();
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER_A}/identitysynchronization"
    );
    e.api_version = "v1.0".into();
    e.partner_tenant_id = PARTNER_A.parse().ok();
    e.operation = "sync_update".into();
    e.actor = Actor {
        oid: Some("11111111-1111-4111-8111-111111111111".into()),
        upn: Some("alice@contoso.com".into()),
        appid: Some("22222222-2222-4222-8222-222222222222".into()),
        app_displayname: Some("Graph Explorer".into()),
        caller_address: Some("127.0.0.1:50000".into()),
        ..Actor::default()
    };
    e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
    e.decision = Some(Decision::Allow);
    e
}

/// A log of three operations, five events:
/// 1, 2: alice enables sync on partner A (received, completed) on 2025-06-01;
/// 3: an automation app is denied on partner B on 2025-06-02;
/// 4, 5: bob's change on partner A on 2025-06-03: received, then recovered after a crash.
struct Fixture {
    _dir: TempDir,
    db: PathBuf,
    recorded: Vec<Recorded>,
    alice_op: Uuid,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let (alice_op, app_op, bob_op) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    let mut events = vec![event(alice_op, EventKind::Received, 1, 9)];
    let mut done = event(alice_op, EventKind::Completed, 1, 10);
    done.before = Some(Snapshot::Present {
        value: json!({"userSyncInbound": {"isSyncAllowed": false}}),
    });
    done.after = Some(Snapshot::Present {
        value: json!({"userSyncInbound": {"isSyncAllowed": true}}),
    });
    done.diff = Some(json!([
        {"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}
    ]));
    done.upstream_status = Some(204);
    done.effect = Some(Effect::Applied);
    done.latency_ms = Some(120);
    done.upstream_latency_ms = Some(80);
    events.push(done);

    let mut denied = event(app_op, EventKind::Denied, 2, 12);
    denied.partner_tenant_id = PARTNER_B.parse().ok();
    denied.actor = Actor {
        appid: Some(AUTOMATION_APP.into()),
        idtyp: Some("app".into()),
        roles: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        ..Actor::default()
    };
    denied.decision = Some(Decision::Deny);
    denied.detail = Some("partner not allow-listed, see \"partners\" rule\nsecond line".into());
    events.push(denied);

    let mut bob = event(bob_op, EventKind::Received, 3, 8);
    bob.actor = Actor {
        oid: Some(BOB_OID.into()),
        upn: Some("Bob@Contoso.com".into()),
        ..Actor::default()
    };
    events.push(bob.clone());
    let mut recovered = bob;
    recovered.event_id = Uuid::now_v7();
    recovered.kind = EventKind::Recovered;
    recovered.time = Utc.with_ymd_and_hms(2025, 6, 3, 9, 0, 0).unwrap();
    recovered.after = Some(Snapshot::Unreadable {
        status: Some(503),
        error: "upstream unavailable".into(),
    });
    recovered.effect = Some(Effect::Unknown);
    events.push(recovered);

    let mut recorded = Vec::new();
    for e in events {
        recorded.push(store.append(e).await.unwrap());
    }
    store.close().await;
    Fixture {
        _dir: dir,
        db,
        recorded,
        alice_op,
    }
}

fn jsonl_seqs(run: &Run) -> Vec<i64> {
    assert!(run.ok, "{}", run.stderr);
    run.stdout
        .lines()
        .map(|l| serde_json::from_str::<Recorded>(l).unwrap().seq)
        .collect()
}

#[tokio::test]
async fn audit_list_table_shows_one_aligned_row_per_event() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["list"]);
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", run.stdout);
    assert!(lines[0].starts_with("SEQ"), "{}", lines[0]);
    for header in [
        "TIME",
        "KIND",
        "OPERATION",
        "PARTNER",
        "ACTOR",
        "DECISION",
        "STATUS",
        "EFFECT",
        "OPERATION ID",
    ] {
        assert!(lines[0].contains(header), "{header} in {}", lines[0]);
    }
    // Aligned: every column starts at the same offset on every line.
    let kind_at = lines[0].find("KIND").unwrap();
    let actor_at = lines[0].find("ACTOR").unwrap();
    for (line, (kind, actor)) in lines[1..].iter().zip([
        ("received", "alice@contoso.com"),
        ("completed", "alice@contoso.com"),
        ("denied", AUTOMATION_APP),
        ("received", "Bob@Contoso.com"),
        ("recovered", "Bob@Contoso.com"),
    ]) {
        assert_eq!(&line[kind_at..kind_at + kind.len()], kind, "{line}");
        assert_eq!(&line[actor_at..actor_at + actor.len()], actor, "{line}");
    }
    assert!(
        lines[2].contains("204") && lines[2].contains("applied"),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(&f.alice_op.to_string()), "{}", lines[2]);
    assert!(lines[1].contains("2025-06-01T09:00:00Z"), "{}", lines[1]);
}

#[tokio::test]
async fn audit_list_json_and_jsonl_give_back_the_recorded_events() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["list", "--format", "json"]);
    assert!(run.ok, "{}", run.stderr);
    let listed: Vec<Recorded> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(listed, f.recorded);

    let run = audit_db(&f.db, &["list", "--format", "jsonl"]);
    assert!(run.ok, "{}", run.stderr);
    let listed: Vec<Recorded> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed, f.recorded);

    let run = audit_db(&f.db, &["list", "--format", "json", "--kind", "drift"]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!([])
    );
}

/// A minimal RFC 4180 reader, to check the writer against.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn audit_list_csv_has_a_header_and_quotes_what_needs_quoting() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["list", "--format", "csv"]);
    assert!(run.ok, "{}", run.stderr);
    let rows = parse_csv(&run.stdout);
    assert_eq!(rows.len(), 6, "{}", run.stdout);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert!(rows.iter().all(|r| r.len() == header.len()));
    assert_eq!(rows[3][col("seq")], "3");
    assert_eq!(rows[3][col("kind")], "denied");
    assert_eq!(
        rows[3][col("detail")],
        "partner not allow-listed, see \"partners\" rule\nsecond line"
    );
    assert_eq!(
        rows[3][col("actor_roles")],
        "[\"Policy.ReadWrite.CrossTenantAccess\"]"
    );
    assert_eq!(rows[2][col("upstream_status")], "204");
    let diff: Value = serde_json::from_str(&rows[2][col("diff")]).unwrap();
    assert_eq!(diff[0]["path"], "/userSyncInbound/isSyncAllowed");
    assert_eq!(rows[2][col("hash")], f.recorded[1].hash);
}

#[tokio::test]
async fn audit_list_filters_by_partner_actor_time_kind_decision_and_limit() {
    let f = fixture().await;
    let cases: [(&[&str], Vec<i64>); 12] = [
        (&[], vec![1, 2, 3, 4, 5]),
        (&["--partner", PARTNER_B], vec![3]),
        // GUIDs are matched whatever case they are typed in.
        (&["--partner", &PARTNER_A.to_uppercase()], vec![1, 2, 4, 5]),
        (&["--actor", "ALICE@contoso.com"], vec![1, 2]),
        (&["--actor", BOB_OID], vec![4, 5]),
        (&["--actor", AUTOMATION_APP], vec![3]),
        (&["--since", "2025-06-02"], vec![3, 4, 5]),
        (&["--until", "2025-06-02"], vec![1, 2, 3]),
        (
            &[
                "--since",
                "2025-06-01T09:30:00Z",
                "--until",
                "2025-06-03T08:00:00Z",
            ],
            vec![2, 3],
        ),
        (&["--kind", "received"], vec![1, 4]),
        (&["--decision", "deny"], vec![3]),
        (&["--limit", "2", "--after", "1"], vec![2, 3]),
    ];
    for (args, expected) in cases {
        let mut all = vec!["list", "--format", "jsonl"];
        all.extend_from_slice(args);
        assert_eq!(jsonl_seqs(&audit_db(&f.db, &all)), expected, "{args:?}");
    }
    let bad = audit_db(&f.db, &["list", "--kind", "finished"]);
    assert!(!bad.ok);
    assert!(bad.stderr.contains("received, completed"), "{}", bad.stderr);
    let bad = audit_db(&f.db, &["list", "--since", "last tuesday"]);
    assert!(!bad.ok);
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}

#[tokio::test]
async fn audit_reads_the_database_path_from_the_config_file_and_db_wins() {
    let f = fixture().await;
    let dir = f.db.parent().unwrap();
    let config = dir.join("syncgate.toml");
    // A relative store.path is taken relative to the config file's folder.
    std::fs::write(&config, "[store]\npath = \"audit.db\"\n").unwrap();
    let run = audit(&[
        "list",
        "--format",
        "jsonl",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(jsonl_seqs(&run), vec![1, 2, 3, 4, 5]);

    std::fs::write(&config, "[store]\npath = \"elsewhere.db\"\n").unwrap();
    let run = audit(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--db",
        f.db.to_str().unwrap(),
    ]);
    assert!(run.ok, "{}", run.stderr);
    let run = audit(&["verify", "--config", config.to_str().unwrap()]);
    assert!(!run.ok);
    assert!(run.stderr.contains("elsewhere.db"), "{}", run.stderr);
    assert!(!dir.join("elsewhere.db").exists());
}

#[tokio::test]
async fn audit_show_prints_the_operation_its_states_and_one_line_per_change() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["show", &f.alice_op.to_string()]);
    assert!(run.ok, "{}", run.stderr);
    let out = &run.stdout;
    for expected in [
        f.alice_op.to_string().as_str(),
        "sync_update  PATCH /v1.0/policies/crosstenantaccesspolicy/partners/",
        PARTNER_A,
        "alice@contoso.com",
        "(Graph Explorer)",
        "from 127.0.0.1:50000",
        "received → completed",
        "2025-06-01T09:00:00.000000Z → 2025-06-01T10:00:00.000000Z",
        "status      204",
        "effect      applied",
        "latency     120 ms (upstream 80 ms)",
        "request body",
        "\nbefore\n",
        "\nafter\n",
        "\"isSyncAllowed\": false",
        "\"isSyncAllowed\": true",
        "replace /userSyncInbound/isSyncAllowed: false → true",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    // The before-state is printed before the after-state, the changes last.
    let before = out.find("\nbefore\n").unwrap();
    let after = out.find("\nafter\n").unwrap();
    let changes = out.find("\nchanges\n").unwrap();
    assert!(before < after && after < changes, "{out}");

    let run = audit_db(
        &f.db,
        &["show", &f.alice_op.to_string(), "--format", "json"],
    );
    assert!(run.ok, "{}", run.stderr);
    let shown: Vec<Recorded> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(shown, f.recorded[..2].to_vec());
}

#[tokio::test]
async fn audit_show_of_an_unknown_operation_fails_with_a_message() {
    let f = fixture().await;
    let unknown = Uuid::now_v7().to_string();
    let run = audit_db(&f.db, &["show", &unknown]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains(&format!("no operation {unknown}")),
        "{}",
        run.stderr
    );
    let run = audit_db(&f.db, &["show", "not-a-uuid"]);
    assert!(!run.ok);
}

#[tokio::test]
async fn audit_verify_passes_on_an_intact_log_and_names_the_tampered_event() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["verify"]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("5 events"), "{}", run.stdout);
    assert!(run.stdout.contains(&f.recorded[4].hash), "{}", run.stdout);

    // Tamper as someone with write access to the file would: drop the guard, edit one event.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.db.display()))
        .await
        .unwrap();
    conn.execute("DROP TRIGGER audit_events_no_update")
        .await
        .unwrap();
    conn.execute(
        "UPDATE audit_events SET event = replace(event, '\"status\":503', '\"status\":200') \
         WHERE seq = 5",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    let run = audit_db(&f.db, &["verify"]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("seq 5"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&f.recorded[4].event.event_id.to_string()),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("4 events before it verified"),
        "{}",
        run.stderr
    );
}

/// The operations index is derived and carries no hash: an edit of it (here, hiding Alice's
/// change from a `decision=allow` query) fails `audit verify` with a pointer to `audit
/// reindex`, which folds the events again and verifies.
#[tokio::test]
async fn audit_reindex_rebuilds_an_edited_operations_index_from_the_events() {
    let f = fixture().await;
    let listed = |db: &Path| {
        let run = audit_db(db, &["list", "--operations", "--format", "jsonl"]);
        assert!(run.ok, "{}", run.stderr);
        run.stdout
    };
    let before = listed(&f.db);
    assert!(before.contains(&f.alice_op.to_string()), "{before}");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.db.display()))
        .await
        .unwrap();
    conn.execute(
        format!(
            "UPDATE operation_index SET decision = 'deny' WHERE operation_id = '{}'",
            f.alice_op
        )
        .as_str(),
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_ne!(listed(&f.db), before, "the edit shows in the listing");

    let run = audit_db(&f.db, &["verify"]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("operations index"), "{}", run.stderr);
    assert!(
        run.stderr.contains("syncgate audit reindex"),
        "{}",
        run.stderr
    );

    let run = audit_db(&f.db, &["reindex"]);
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("rebuilt the operations index through seq 5"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("audit log OK: 5 events"),
        "{}",
        run.stdout
    );
    assert_eq!(listed(&f.db), before);
}

/// `audit key` prints the checkpoint signing key's verifier key in the form transparency
/// tooling reads, creating the key (0600, beside the log) once and reusing it after.
#[tokio::test]
async fn audit_key_prints_one_stable_verifier_key_per_log() {
    let f = fixture().await;
    let run = audit_db(&f.db, &["key"]);
    assert!(run.ok, "{}", run.stderr);
    let vkey = run.stdout.trim().to_owned();
    let verifier = syncgate::audit::note::Verifier::parse(&vkey).unwrap();
    assert!(verifier.name().starts_with("syncgate/"), "{vkey}");
    let file = syncgate::store::signing_key::key_path(&f.db);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(audit_db(&f.db, &["key"]).stdout.trim(), vkey);
    let named = audit_db(&f.db, &["key", "--origin", "audit.example.com/syncgate"]);
    assert!(named.ok, "{}", named.stderr);
    let named = named.stdout.trim().to_owned();
    assert!(named.starts_with("audit.example.com/syncgate+"), "{named}");
    // Same key, another name: the key material after the second '+' is the same.
    assert_eq!(named.splitn(3, '+').nth(2), vkey.splitn(3, '+').nth(2));
    let bad = audit_db(&f.db, &["key", "--origin", "two words"]);
    assert!(!bad.ok);
}

#[tokio::test]
async fn audit_commands_on_a_missing_database_fail_clearly_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.db");
    for args in [
        &["list"][..],
        &["verify"],
        &["show", &Uuid::now_v7().to_string()],
        &["key"],
        &["reindex"],
        &["checkpoint"],
    ] {
        let run = audit_db(&missing, args);
        assert!(!run.ok, "{args:?}");
        assert!(
            run.stderr.contains("no audit log at") && run.stderr.contains("nothing-here.db"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn audit_commands_leave_the_database_file_untouched() {
    let f = fixture().await;
    let before = std::fs::read(&f.db).unwrap();
    for args in [
        &["list"][..],
        &["verify"],
        &["show", &f.alice_op.to_string()],
    ] {
        assert!(audit_db(&f.db, args).ok, "{args:?}");
    }
    assert_eq!(std::fs::read(&f.db).unwrap(), before);
}
