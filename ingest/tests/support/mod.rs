//! Both storage kinds for the ingest's tests: each test runs on native
//! partitions and on TimescaleDB (a server with the extension preloaded).
//! Without TimescaleDB installed, the TimescaleDB half fails, naming how
//! to install it: it never passes by testing native storage twice.

#![allow(dead_code, unreachable_pub)] // Each test file uses a part.

use shopfloor_ingest::Storage;
use shopfloor_testkit::Postgres;
use tokio_postgres::Client;

/// A server for `storage`; TimescaleDB is preloaded for
/// [`Storage::TimescaleDb`] (and telemetry off).
pub fn postgres(storage: Storage) -> Postgres {
    let b = Postgres::builder();
    let b = match storage {
        Storage::TimescaleDb => b.timescaledb(),
        _ => b,
    };
    b.start().unwrap_or_else(|e| {
        eprintln!("\n\n=== {storage:?} ingest tests cannot run: {e} ===\n\n");
        panic!("start PostgreSQL for {storage:?}: {e}")
    })
}

/// Whether the ingest should make a TimescaleDB schema for `storage`.
pub fn timescaledb(storage: Storage) -> bool {
    storage == Storage::TimescaleDb
}

/// The migrated schema really uses `storage` (not a silent fallback).
pub async fn assert_storage(client: &Client, storage: Storage) {
    let got = shopfloor_ingest::storage(client).await.expect("read the storage");
    assert_eq!(got, storage, "the schema was made for another storage kind");
}

/// `#[tokio::test]`s `native::NAME` and `timescaledb::NAME` that call
/// `NAME(Storage::…)` of the file.
#[macro_export]
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(shopfloor_ingest::Storage::Native).await
                }
            )*
        }
        mod timescaledb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(shopfloor_ingest::Storage::TimescaleDb).await
                }
            )*
        }
    };
}
