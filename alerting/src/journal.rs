//! The alarm journal in PostgreSQL (feature `postgres`): every event, with
//! the operator's identity and comment, in `shopfloor.alarm_journal`, and
//! the state that must survive a restart in `shopfloor.alarm_state`
//! ([`Engine::persisted`](crate::Engine::persisted) /
//! [`restore`](crate::Engine::restore)).
//!
//! Its migrations are the alerting crate's own (recorded in
//! `shopfloor.alarm_migrations`), so the ingest and the alerting daemon can
//! share a database without knowing each other.

use tokio_postgres::Client;

use crate::engine::{AlarmKey, Condition, Event, Persisted};
use crate::limit::LevelKind;

/// A database error with what was being done, and the driver's error
/// with its causes (the server's message, or why TLS failed).
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL: cannot {what}: {}", chain(source))]
pub struct JournalError {
    what: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// An error and its causes, `: `-joined (tokio-postgres says only `db
/// error` or `error performing TLS handshake`; the causes say what).
fn chain(e: &tokio_postgres::Error) -> String {
    let causes = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source());
    causes.map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> JournalError {
    move |source| JournalError { what, source }
}

const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_journal.sql")),
    (2, include_str!("../migrations/0002_confirm.sql")),
    (3, include_str!("../migrations/0003_area.sql")),
];
/// `pg_advisory_xact_lock` key: "SHOPALRM".
const LOCK: i64 = 0x5348_4f50_414c_524d;

/// The journal on one connection.
#[derive(Debug)]
pub struct Journal {
    client: Client,
}

fn condition(c: Condition) -> &'static str {
    match c {
        Condition::Level(l) => l.code(),
        Condition::On => "ON",
    }
}

fn parse_condition(s: &str) -> Option<Condition> {
    Some(match s {
        "HH" => Condition::Level(LevelKind::HighHigh),
        "H" => Condition::Level(LevelKind::High),
        "L" => Condition::Level(LevelKind::Low),
        "LL" => Condition::Level(LevelKind::LowLow),
        "ON" => Condition::On,
        _ => return None,
    })
}

impl Journal {
    /// Connects and applies the journal's migrations: TLS as `url`'s
    /// `sslmode` asks (`disable`, `prefer`, the default, or `require`),
    /// encrypting without checking the server's certificate (see
    /// [`connect_with`](Self::connect_with)).
    pub async fn connect(url: &str) -> Result<Self, JournalError> {
        Self::connect_with(url, None, None).await
    }

    /// [`connect`](Self::connect) with the password apart from `url` (set
    /// through the driver) and TLS settings: from
    /// `shopfloor_mqtt::tls_client_config` with the server's CA, the
    /// server's certificate and host name are checked (libpq's
    /// `verify-full`); `None` encrypts without that check (libpq's
    /// `sslmode=require`).
    pub async fn connect_with(
        url: &str,
        password: Option<&str>,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self, JournalError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db("connect"))?;
        if let Some(p) = password {
            config.password(p);
        }
        let tls = tls.map_or_else(shopfloor_mqtt::tls_unverified_config, std::sync::Arc::clone);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
        let (mut client, conn) = config.connect(tls).await.map_err(db("connect"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("PostgreSQL connection (alarm journal): {e}");
            }
        });
        for (version, sql) in MIGRATIONS {
            let tx = client.transaction().await.map_err(db("start a migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
                .await
                .map_err(db("take the migration lock"))?;
            tx.batch_execute(
                "CREATE SCHEMA IF NOT EXISTS shopfloor;
                 CREATE TABLE IF NOT EXISTS shopfloor.alarm_migrations (
                     version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
            )
            .await
            .map_err(db("create shopfloor.alarm_migrations"))?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM shopfloor.alarm_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(db("read shopfloor.alarm_migrations"))?
                .is_some();
            if !done {
                tx.batch_execute(sql).await.map_err(db("apply a journal migration"))?;
                tx.execute(
                    "INSERT INTO shopfloor.alarm_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(db("record a journal migration"))?;
            }
            tx.commit().await.map_err(db("commit a journal migration"))?;
        }
        Ok(Self { client })
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Appends events, in one statement.
    pub async fn record(&self, events: &[Event]) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut cols: [Vec<Option<String>>; 8] = Default::default();
        let (mut times, mut instances, mut priorities, mut values, mut annunciate) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut details = Vec::with_capacity(events.len());
        for e in events {
            let mut j = crate::json::event_json(e);
            let text = |k: &str| j.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            cols[0].push(Some(e.key.rule.clone()));
            cols[1].push(Some(e.key.source.clone()));
            cols[2].push(Some(e.key.metric.clone()));
            cols[3].push(text("event"));
            cols[4].push(text("condition"));
            cols[5].push(text("user"));
            cols[6].push(text("comment"));
            cols[7].push(Some(e.area.clone()));
            times.push(e.time as f64 / 1000.0);
            instances.push(e.instance as i64);
            priorities.push(j.get("priority").and_then(|v| v.as_i64()).map(|p| p as i32));
            values.push(j.get("value").and_then(|v| v.as_f64()));
            annunciate.push(e.annunciate);
            // What has no column of its own goes to `detail`.
            if let Some(o) = j.as_object_mut() {
                for k in [
                    "rule",
                    "source",
                    "metric",
                    "instance",
                    "time",
                    "event",
                    "condition",
                    "priority",
                    "value",
                    "annunciate",
                    "area",
                    "user",
                    "comment",
                ] {
                    o.remove(k);
                }
            }
            details.push(j.to_string());
        }
        self.client
            .execute(
                "INSERT INTO shopfloor.alarm_journal
                   (time, rule, source, metric, instance, event, condition, priority, value,
                    annunciate, user_name, comment, detail, area)
                 SELECT to_timestamp(t), r, s, m, i, e, c, p, v, a, u, co, d::jsonb, ar
                 FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[],
                             $7::text[], $8::int4[], $9::float8[], $10::bool[], $11::text[], $12::text[],
                             $13::text[], $14::text[]) AS x(t, r, s, m, i, e, c, p, v, a, u, co, d, ar)",
                &[
                    &times, &cols[0], &cols[1], &cols[2], &instances, &cols[3], &cols[4], &priorities,
                    &values, &annunciate, &cols[5], &cols[6], &details, &cols[7],
                ],
            )
            .await
            .map_err(db("append to shopfloor.alarm_journal"))?;
        Ok(())
    }

    /// Replaces the saved state with `state`, in one transaction.
    pub async fn save_state(&mut self, state: &[Persisted]) -> Result<(), JournalError> {
        let tx = self.client.transaction().await.map_err(db("start saving the alarm state"))?;
        tx.execute("DELETE FROM shopfloor.alarm_state", &[])
            .await
            .map_err(db("clear shopfloor.alarm_state"))?;
        for p in state {
            let until = p.shelved.flatten().map(|t| t as i64);
            tx.execute(
                "INSERT INTO shopfloor.alarm_state
                   (rule, source, metric, instance, active, unacknowledged, shelved,
                    shelved_until, out_of_service, latched, unconfirmed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &p.key.rule,
                    &p.key.source,
                    &p.key.metric,
                    &(p.instance as i64),
                    &p.active.map(condition),
                    &p.unacknowledged,
                    &p.shelved.is_some(),
                    &until,
                    &p.out_of_service,
                    &p.latched,
                    &p.unconfirmed,
                ],
            )
            .await
            .map_err(db("save shopfloor.alarm_state"))?;
        }
        tx.commit().await.map_err(db("commit the alarm state"))?;
        Ok(())
    }

    /// The saved state, for [`Engine::restore`](crate::Engine::restore).
    pub async fn load_state(&self) -> Result<Vec<Persisted>, JournalError> {
        let rows = self
            .client
            .query(
                "SELECT rule, source, metric, instance, active, unacknowledged, shelved,
                        shelved_until, out_of_service, latched, unconfirmed
                 FROM shopfloor.alarm_state",
                &[],
            )
            .await
            .map_err(db("read shopfloor.alarm_state"))?;
        Ok(rows
            .iter()
            .map(|r| Persisted {
                key: AlarmKey { rule: r.get(0), source: r.get(1), metric: r.get(2) },
                instance: r.get::<_, i64>(3) as u64,
                active: r.get::<_, Option<&str>>(4).and_then(parse_condition),
                unacknowledged: r.get(5),
                shelved: r.get::<_, bool>(6).then(|| r.get::<_, Option<i64>>(7).map(|t| t as u64)),
                out_of_service: r.get(8),
                latched: r.get(9),
                unconfirmed: r.get(10),
            })
            .collect())
    }
}
