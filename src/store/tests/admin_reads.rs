//! Who read the log (`admin_reads`, migration 0002): recorded through the writer, listed in
//! order, append-only, and added to logs created before it existed. Also the committed-head watch
//! that long polls wake on, and the query plans the admin routes rely on.

use chrono::Timelike;
use sqlx::migrate::Migrator;
use sqlx::{ConnectOptions, Connection};

use super::*;

fn read(principal: &str, rows: u64) -> ReadRecord {
    ReadRecord {
        id: 0,
        time: at(0),
        principal: principal.into(),
        principal_oid: Some("aaaaaaaa-1111-2222-3333-444444444444".into()),
        method: "GET".into(),
        route: "/api/v1/events".into(),
        query: Some("after_seq=0".into()),
        status: 200,
        rows_returned: rows,
        remote_addr: "127.0.0.1:5000".into(),
    }
}

async fn reads_are_recorded_in_order_and_listed_after_an_id(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let first = store.record_read(read("ann", 3)).await.unwrap();
    let second = store.record_read(read("abe", 0)).await.unwrap();
    assert!(second > first, "{first} then {second}");
    let all = store.read_side().admin_reads(0, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].id, all[0].principal.as_str()), (first, "ann"));
    assert_eq!(all[0].rows_returned, 3);
    assert_eq!(all[0].time, at(0).with_nanosecond(123_456_000).unwrap());
    assert_eq!(all[1].query.as_deref(), Some("after_seq=0"));
    let later = store.read_side().admin_reads(first, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(store.read_side().admin_reads(0, 1).await.unwrap().len(), 1);
    // Reads are not events: the chain is untouched.
    assert_eq!(store.verify().await.unwrap().events, 0);
    store.close().await;
}
on_both_backends!(reads_are_recorded_in_order_and_listed_after_an_id);

async fn admin_reads_refuse_update_and_delete(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    store.record_read(read("ann", 1)).await.unwrap();
    let mut refused = vec![
        "UPDATE admin_reads SET principal = 'mallory'",
        "DELETE FROM admin_reads",
    ];
    if backend == Backend::Postgres {
        refused.push("TRUNCATE admin_reads");
    }
    for sql in refused {
        let error = log.try_sql(sql).await.expect_err(sql);
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    let kept = store.read_side().admin_reads(0, 10).await.unwrap();
    assert_eq!(kept[0].principal, "ann");
    store.close().await;
}
on_both_backends!(admin_reads_refuse_update_and_delete);

async fn the_committed_head_changes_when_this_process_appends(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let mut head = store.committed_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let recorded = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    head.changed().await.unwrap();
    assert_eq!(*head.borrow_and_update(), recorded.seq);
    store.close().await;
}
on_both_backends!(the_committed_head_changes_when_this_process_appends);

/// The migrations of `backend` up to and including `version`, from a folder holding only those.
async fn migrator_up_to(backend: Backend, version: &str) -> (tempfile::TempDir, Migrator) {
    let source = format!(
        "{}/migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() <= version {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let migrator = Migrator::new(dir.path()).await.unwrap();
    (dir, migrator)
}

async fn a_log_created_by_migration_0001_gains_admin_reads_when_opened(backend: Backend) {
    let log = TestLog::new(backend).await;
    let (_dir, only_0001) = migrator_up_to(backend, "0001_z").await;
    match &log.location {
        StoreLocation::Sqlite(path) => {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            only_0001.run(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        StoreLocation::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            only_0001.run(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    assert!(log.try_sql("SELECT 1 FROM admin_reads").await.is_err());
    let store = log.open().await;
    store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    store.record_read(read("ann", 1)).await.unwrap();
    assert_eq!(store.read_side().admin_reads(0, 10).await.unwrap().len(), 1);
    assert!(store.verify().await.unwrap().first_broken.is_none());
    store.close().await;
}
on_both_backends!(a_log_created_by_migration_0001_gains_admin_reads_when_opened);

/// sqlx refuses to open a database whose applied migration's file changed, so editing 0001
/// would lock every existing log out: migrations are append-only, and this pins them.
#[test]
fn migration_0001_is_never_edited() {
    use sha2::{Digest, Sha256};
    for (backend, pinned) in [("sqlite", SQLITE_0001), ("postgres", POSTGRES_0001)] {
        let path = format!(
            "{}/migrations/{backend}/0001_audit_log.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&text)),
            pinned,
            "{path} was edited"
        );
    }
}

const SQLITE_0001: &str = "a901051c203499a6f5f307fe448c6992fad43c97af9c46eec00c51a937d794fe";
const POSTGRES_0001: &str = "b02cd591a2966b1234652dbaea30bdfd3852b9d21465fdfb4e107efa7d43de59";

/// `GET /api/v1/operations/{id}` must answer in milliseconds on a million-event log: its query
/// is a search of the `(operation_id, seq)` index, never a scan; `/api/v1/events` pages by the
/// primary key.
#[tokio::test]
async fn one_operations_events_and_a_page_after_a_seq_are_index_searches_on_sqlite() {
    use sqlx::Row;
    let log = TestLog::new(Backend::Sqlite).await;
    log.open().await.close().await;
    let StoreLocation::Sqlite(path) = &log.location else {
        unreachable!()
    };
    let mut conn = super::super::sqlite::raw_connection(path).await;
    for (filter, index) in [
        (
            Filter {
                operation_id: Some(Uuid::now_v7().into()),
                ..Filter::default()
            },
            "USING INDEX audit_events_operation (operation_id=?)",
        ),
        (
            Filter {
                after_seq: Some(10),
                limit: Some(100),
                ..Filter::default()
            },
            "USING INTEGER PRIMARY KEY (rowid>?)",
        ),
    ] {
        let query = queries::list::<sqlx::Sqlite>(&filter);
        let sql = format!("EXPLAIN QUERY PLAN {}", query.sql());
        let mut plan = sqlx::query(&sql);
        if let Some(id) = filter.operation_id {
            plan = plan.bind(id.uuid().hyphenated().to_string());
        }
        if let Some(after) = filter.after_seq {
            plan = plan.bind(after).bind(i64::from(filter.limit.unwrap()));
        }
        let rows = plan.fetch_all(&mut conn).await.unwrap();
        let detail: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        assert!(detail.iter().any(|d| d.contains(index)), "{detail:?}");
    }
    conn.close().await.unwrap();
}
