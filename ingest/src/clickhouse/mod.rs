//! ClickHouse as the ingest's store: TabSeparated INSERTs over its HTTP
//! interface.
//!
//! The schema (made at connect, `IF NOT EXISTS`; [`ddl`] prints it) is
//! designed for current ClickHouse, with a variant for servers older than
//! 20.1, which have no `DateTime64` (Debian 12's is 18.16):
//!
//! | table | engine | columns |
//! |---|---|---|
//! | `readings` | `ReplacingMergeTree`, ordered by (source, metric, time) | `source`, `metric`, `time DateTime64(3, 'UTC')` (legacy: `time DateTime` and `ms UInt16`), `value Nullable(Float64)`, `value_text Nullable(String)`, `quality UInt8` |
//! | `readings_1m`, `readings_1h` | `AggregatingMergeTree`, filled by materialized views | good numeric samples per (source, metric, bucket): `samples` (the distinct (time, value) pairs), `low`, `high` |
//! | `metrics` | `ReplacingMergeTree(updated_ms)` | the latest description of each (source, metric) |
//! | `sparkplug_births` | `ReplacingMergeTree(received_ms)` | the latest birth of each topic (payload as base64) |
//! | `dead_letters` | `ReplacingMergeTree`, ordered by `ns` | `received`, `ns`, `topic`, `payload`, `error` |
//!
//! Delivery, in the terms of [`crate::sink`]: a write is acknowledged once
//! ClickHouse answered 200 to the INSERT (the part is written; ClickHouse
//! does not fsync it by default: a power cut can lose the last seconds,
//! `fsync_after_insert` on 21.x and later closes that). A redelivered
//! reading is a second row with the same key, which `ReplacingMergeTree`
//! drops when it merges: read with `FINAL` (or `argMax`, `LIMIT 1 BY`) for
//! exactly one row per (source, metric, time). The rollups keep distinct
//! (time, value) pairs, not running sums, so a redelivery does not count
//! twice there either. Rows ClickHouse refuses for their data (parse,
//! type and range errors) are halved down to the row at fault and become
//! dead letters with its message; anything else is retried.

pub mod tsv;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};

use crate::error::IngestError;
use crate::http::{
    Answer, Dialect, Encoded, HttpConfig, HttpSink, HttpStore, HttpWriter, Lines,
    encode_readings_and_deaths,
};
use crate::sink::Sink;
use crate::writer::{DeadLetter, Submission};

const STORE: &str = "ClickHouse";

/// Which form of the schema a server gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Schema {
    /// ClickHouse 20.1 and later: `DateTime64(3, 'UTC')`, `LowCardinality`.
    Current,
    /// Older servers: `time DateTime` (seconds) and `ms UInt16`.
    Legacy,
}

impl Schema {
    /// The schema for a server's `version()` (`18.16.1`, `24.3.2.23`).
    pub fn for_version(version: &str) -> Self {
        let major: u32 = version.trim().split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        if major >= 20 { Self::Current } else { Self::Legacy }
    }
}

/// Where and how the ClickHouse sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClickHouseConfig {
    /// The HTTP interface's base URL (`http://127.0.0.1:8123`).
    pub url: String,
    /// The database (made at connect).
    pub database: String,
    /// User and password (HTTP basic authentication); `None`: `default`.
    pub credentials: Option<(String, String)>,
    /// A request's timeout (default 30 s).
    pub timeout: Duration,
    /// Bytes of rows per INSERT at most (default 8 MiB).
    pub max_body: usize,
    /// The schema form; `None` (default): from the server's version.
    pub schema: Option<Schema>,
}

impl ClickHouseConfig {
    /// Database `database` at `url`, user `default`.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            credentials: None,
            timeout: Duration::from_secs(30),
            max_body: 8 << 20,
            schema: None,
        }
    }

    /// Checks what can be checked without a server.
    pub fn check(&self) -> Result<(), crate::http::StoreConfigError> {
        crate::http::check_url(&self.url)?;
        if self.database.is_empty()
            || !self.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(crate::http::StoreConfigError::new(
                "database",
                &self.database,
                "give a name of letters, digits and _",
            ));
        }
        Ok(())
    }

    /// A request running `query`, with `body` (rows for an INSERT).
    pub fn request(&self, query: &str, body: Vec<u8>) -> Result<Request<Vec<u8>>, http::Error> {
        let q =
            form_urlencoded::Serializer::new(String::new()).append_pair("query", query).finish();
        let uri = format!("{}/?{q}", self.url.trim_end_matches('/'));
        let mut b = Request::builder().method(Method::POST).uri(uri);
        if let Some((user, password)) = &self.credentials {
            use base64::Engine as _;
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            b = b.header("Authorization", format!("Basic {basic}"));
        }
        b.body(body)
    }
}

/// The statements that make the schema in `database`, in order.
pub fn ddl(database: &str, schema: Schema) -> Vec<String> {
    let db = database;
    let (name, time, order, sample, simple) = match schema {
        Schema::Current => (
            "LowCardinality(String)",
            "time DateTime64(3, 'UTC')",
            "source, metric, time",
            "Tuple(DateTime64(3, 'UTC'), Float64)",
            true,
        ),
        Schema::Legacy => (
            "String",
            "time DateTime, ms UInt16",
            "source, metric, time, ms",
            "Tuple(DateTime, UInt16, Float64)",
            false,
        ),
    };
    let sample_of = match schema {
        Schema::Current => "(time, assumeNotNull(value))",
        Schema::Legacy => "(time, ms, assumeNotNull(value))",
    };
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.readings (source {name}, metric {name}, {time}, value Nullable(Float64), value_text Nullable(String), quality UInt8) \
             ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(time) ORDER BY ({order})"
        ),
    ];
    for (table, bucket) in [("readings_1m", "toStartOfMinute"), ("readings_1h", "toStartOfHour")] {
        let (low, high, low_of, high_of) = if simple {
            (
                "SimpleAggregateFunction(min, Float64)",
                "SimpleAggregateFunction(max, Float64)",
                "min",
                "max",
            )
        } else {
            (
                "AggregateFunction(min, Float64)",
                "AggregateFunction(max, Float64)",
                "minState",
                "maxState",
            )
        };
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} (source {name}, metric {name}, bucket DateTime, \
             samples AggregateFunction(groupUniqArray, {sample}), low {low}, high {high}) \
             ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(bucket) ORDER BY (source, metric, bucket)"
        ));
        out.push(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table}_mv TO {db}.{table} AS \
             SELECT source, metric, {bucket}(time) AS bucket, groupUniqArrayState({sample_of}) AS samples, \
             {low_of}(assumeNotNull(value)) AS low, {high_of}(assumeNotNull(value)) AS high \
             FROM {db}.readings WHERE quality = 0 AND isNotNull(value) AND isFinite(assumeNotNull(value)) \
             GROUP BY source, metric, bucket"
        ));
    }
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.metrics (source String, metric String, datatype Nullable(String), unit Nullable(String), properties Nullable(String), updated_ms UInt64) \
         ENGINE = ReplacingMergeTree(updated_ms) ORDER BY (source, metric)"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.sparkplug_births (topic String, payload String, received_ms UInt64) \
         ENGINE = ReplacingMergeTree(received_ms) ORDER BY topic"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.dead_letters (received DateTime, ns UInt64, topic String, payload String, error String) \
         ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(received) ORDER BY ns"
    ));
    out
}

/// The query whose answer [`tsv::parse_births`] reads.
pub const BIRTHS_QUERY: &str =
    "SELECT topic, payload, received_ms FROM {db}.sparkplug_births FINAL FORMAT TabSeparated";

/// ClickHouse error codes that mean the rows themselves are refused
/// (parse, type and range errors): the same rows fail again.
const DATA_ERRORS: &[u32] = &[6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349];

/// ClickHouse error codes that mean the schema is gone (unknown table or
/// database): it is made again at the next connect.
const SCHEMA_GONE: &[u32] = &[60, 81];

/// The `Code: N` of a ClickHouse error text.
pub fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A ClickHouse error text, its first line, at most 500 characters.
pub fn server_message(body: &str) -> String {
    let first = body.lines().next().unwrap_or("").trim();
    if first.is_empty() { "no message".into() } else { first.chars().take(500).collect() }
}

/// What an answer to an INSERT means.
pub fn answer(status: u16, body: &str) -> Answer {
    if (200..300).contains(&status) {
        return Answer::Written;
    }
    let code = error_code(body);
    match (status, code) {
        (413, _) => Answer::TooLarge,
        (_, Some(c)) if DATA_ERRORS.contains(&c) => Answer::Refused(server_message(body)),
        (_, Some(c)) if SCHEMA_GONE.contains(&c) => {
            Answer::Failed { status: 404, message: server_message(body) }
        }
        (401 | 403, _) | (_, Some(192..=194 | 516)) => Answer::Failed {
            status,
            message: format!("{} (check the user and password)", server_message(body)),
        },
        _ => Answer::Failed { status, message: server_message(body) },
    }
}

/// The tables a submission's parts go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `sparkplug_births`.
    Births,
    /// `metrics`.
    Metrics,
    /// `readings`.
    Readings,
    /// `dead_letters`.
    DeadLetters,
}

/// A [`ClickHouseConfig`] with its server's schema form: the sans-IO half
/// of the sink.
#[derive(Debug)]
pub struct ClickHouseDialect {
    config: Arc<ClickHouseConfig>,
    schema: Schema,
}

impl ClickHouseDialect {
    /// `config` writing the `schema` form.
    pub fn new(config: Arc<ClickHouseConfig>, schema: Schema) -> Self {
        Self { config, schema }
    }

    /// The INSERT statement for `table`.
    pub fn insert(&self, table: Table) -> String {
        let db = &self.config.database;
        let (name, columns) = match (table, self.schema) {
            (Table::Readings, Schema::Current) => {
                ("readings", "source, metric, time, value, value_text, quality")
            }
            (Table::Readings, Schema::Legacy) => {
                ("readings", "source, metric, time, ms, value, value_text, quality")
            }
            (Table::Metrics, _) => {
                ("metrics", "source, metric, datatype, unit, properties, updated_ms")
            }
            (Table::Births, _) => ("sparkplug_births", "topic, payload, received_ms"),
            (Table::DeadLetters, _) => ("dead_letters", "received, ns, topic, payload, error"),
        };
        format!("INSERT INTO {db}.{name} ({columns}) FORMAT TabSeparated")
    }
}

impl Dialect for ClickHouseDialect {
    type Table = Table;
    const STORE: &'static str = STORE;

    fn encode(&self, work: &Submission, now_ms: u64) -> Encoded<Table> {
        let mut births = Lines::default();
        tsv::encode_births(&mut births, &work.births, now_ms);
        let mut metrics = Lines::default();
        tsv::encode_metrics(&mut metrics, &work.metrics, now_ms);
        let mut readings = Lines::default();
        let refused = encode_readings_and_deaths(work, |batches, death| {
            tsv::encode_readings(&mut readings, self.schema, batches, death)
        });
        let parts =
            [(Table::Births, births), (Table::Metrics, metrics), (Table::Readings, readings)]
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .collect();
        Encoded { parts, refused }
    }

    fn dead_letters(&self, dead: &[DeadLetter], first_ns: u64) -> (Table, Lines) {
        let mut lines = Lines::default();
        tsv::encode_dead_letters(&mut lines, dead, first_ns);
        (Table::DeadLetters, lines)
    }

    fn write_request(&self, table: Table, body: Vec<u8>) -> Result<Request<Vec<u8>>, http::Error> {
        self.config.request(&self.insert(table), body)
    }

    fn answer(&self, status: u16, body: &str) -> Answer {
        answer(status, body)
    }

    fn database(&self) -> &str {
        &self.config.database
    }

    fn max_body(&self) -> usize {
        self.config.max_body
    }
}

/// Writes to ClickHouse.
pub type ClickHouseSink = HttpSink<ClickHouseConfig>;

/// One writer of a [`ClickHouseSink`].
pub type ClickHouseWriter = HttpWriter<ClickHouseDialect>;

impl HttpConfig for ClickHouseConfig {
    fn agent(&self) -> HttpStore {
        HttpStore::new(STORE, &self.url, self.timeout)
    }
}

impl ClickHouseSink {
    async fn query(&self, q: &str, what: &str) -> Result<String, IngestError> {
        self.http.run_ok(self.config.request(q, Vec::new()), what, server_message).await
    }

    /// The server's schema form: as configured, else from its version.
    pub async fn schema(&self) -> Result<Schema, IngestError> {
        if let Some(s) = self.config.schema {
            return Ok(s);
        }
        let version = self
            .query("SELECT version()", &format!("reach the server at {}", self.config.url))
            .await?;
        Ok(Schema::for_version(&version))
    }
}

impl Sink for ClickHouseSink {
    type Writer = ClickHouseWriter;

    fn kind(&self) -> &'static str {
        STORE
    }

    async fn connect(&self) -> Result<ClickHouseWriter, IngestError> {
        let schema = self.schema().await?;
        for statement in ddl(&self.config.database, schema) {
            self.query(&statement, "make the schema").await?;
        }
        Ok(HttpWriter::new(
            Arc::new(ClickHouseDialect::new(Arc::clone(&self.config), schema)),
            self.http.clone(),
        ))
    }

    async fn births(&self) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        let what = "read the kept Sparkplug births";
        let q = BIRTHS_QUERY.replace("{db}", &self.config.database);
        let body = match self.query(&q, what).await {
            // No table yet: nothing kept.
            Err(IngestError::Http { message, .. }) if error_code(&message) == Some(60) => {
                return Ok(Vec::new());
            }
            other => other?,
        };
        self.births_in(&body, what, tsv::parse_births)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_choose_the_schema() {
        assert_eq!(Schema::for_version("18.16.1\n"), Schema::Legacy);
        assert_eq!(Schema::for_version("19.17.4.11"), Schema::Legacy);
        assert_eq!(Schema::for_version("20.1.2.4"), Schema::Current);
        assert_eq!(Schema::for_version("24.8.4.13"), Schema::Current);
    }

    /// Errors as ClickHouse words them (18.16's and 24.x's).
    #[test]
    fn answers_are_classified_by_error_code() {
        let parse = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: \\n: (at row 1)\n\nRow 1:\n";
        assert_eq!(
            answer(500, parse),
            Answer::Refused(
                "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: \\n: (at row 1)".into()
            )
        );
        let unknown = "Code: 60. DB::Exception: Table shopfloor.readings does not exist. (UNKNOWN_TABLE) (version 24.8.4.13 (official build))";
        assert!(matches!(answer(404, unknown), Answer::Failed { status: 404, .. }));
        let auth =
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)";
        let Answer::Failed { message, .. } = answer(401, auth) else { panic!() };
        assert!(message.ends_with("(check the user and password)"), "{message}");
        assert!(matches!(
            answer(500, "Code: 241. Memory limit exceeded"),
            Answer::Failed { status: 500, .. }
        ));
        assert_eq!(answer(200, ""), Answer::Written);
        assert_eq!(error_code("no code here"), None);
    }

    #[test]
    fn inserts_and_requests() {
        let mut c = ClickHouseConfig::new("http://127.0.0.1:8123/", "shopfloor");
        c.credentials = Some(("ingest".into(), "pw".into()));
        let d = ClickHouseDialect::new(Arc::new(c.clone()), Schema::Legacy);
        assert_eq!(
            d.insert(Table::Readings),
            "INSERT INTO shopfloor.readings (source, metric, time, ms, value, value_text, quality) FORMAT TabSeparated"
        );
        let r = d.write_request(Table::Births, b"x".to_vec()).unwrap();
        assert_eq!(
            r.uri(),
            "http://127.0.0.1:8123/?query=INSERT+INTO+shopfloor.sparkplug_births+%28topic%2C+payload%2C+received_ms%29+FORMAT+TabSeparated"
        );
        assert_eq!(r.headers()["authorization"], "Basic aW5nZXN0OnB3");
        assert!(c.check().is_ok());
        assert!(ClickHouseConfig::new("http://h", "shop-floor").check().is_err());
        assert!(ClickHouseConfig::new("https://h", "db").check().is_err());
    }

    #[test]
    fn the_current_schema_uses_datetime64() {
        let current = ddl("db", Schema::Current).join("\n");
        assert!(
            current.contains("time DateTime64(3, 'UTC')") && current.contains("LowCardinality")
        );
        let legacy = ddl("db", Schema::Legacy).join("\n");
        assert!(!legacy.contains("DateTime64") && legacy.contains("ms UInt16"));
    }
}
