//! A PostgreSQL database of a benchmark run's own, shared by the benches that measure both
//! backends (`#[path]`-included: benches are separate crates).

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The PostgreSQL server, without a database (`SYNCGATE_TEST_POSTGRES` to point elsewhere).
pub(crate) fn postgres_server() -> String {
    std::env::var("SYNCGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of the run's own, dropped when the run ends (even by a panic).
pub(crate) struct BenchDatabase {
    name: String,
}

impl BenchDatabase {
    pub(crate) async fn create() -> Self {
        let name = format!("syncgate_bench_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_server()))
            .await
            .expect("PostgreSQL (or pass --backend sqlite to the bench)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = admin.close().await;
        BenchDatabase { name }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", postgres_server(), self.name)
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropped inside the runtime: run the DROP on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let url = format!("{}/postgres", postgres_server());
                if let Ok(mut admin) = PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
