//! InfluxDB as the ingest's store: line protocol over HTTP.
//!
//! Two write APIs:
//! - [`InfluxApi::V1`]: `POST /write?db=…&precision=ms`, what InfluxDB 1.x
//!   serves and 2.x and 3.x keep for compatibility; user and password (if
//!   any) as HTTP basic authentication. The database is made at connect
//!   (`CREATE DATABASE`, which changes nothing when it exists).
//! - [`InfluxApi::V2`]: `POST /api/v2/write?org=…&bucket=…&precision=ms`
//!   with `Authorization: Token …` (2.x, 3.x). The bucket must exist.
//!
//! The schema is in [`mod@line`]. Delivery, in the terms of
//! [`crate::sink`]: a write is acknowledged once InfluxDB answered 204,
//! after its WAL took the points. A point is keyed by measurement, tags
//! (source, metric) and time, so a redelivered reading writes the same
//! point again and a query sees it once: exactly once per (source, metric,
//! millisecond). A reading InfluxDB refuses (400) is found by halving the
//! request down to its line, and becomes a `dead_letters` point with the
//! server's message; the rest is written. Anything else (refused
//! connection, 5xx, 401/403, a missing database) is retried with a
//! backoff. Sparkplug births are kept in `sparkplug_births` and read back
//! through InfluxQL `/query` (2.x: its v1 compatibility API, which needs a
//! DBRP mapping for the bucket).
//!
//! Differences from PostgreSQL: a death's stale row in the same
//! millisecond as the metric's last DATA marks that point stale (in
//! PostgreSQL it goes 1 ms later); `Written::duplicates` is always 0
//! (InfluxDB does not say what it overwrote); dead letters are at least
//! once (a dead letter of a redelivered message is written again).

pub mod line;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};

use crate::error::IngestError;
use crate::http::{
    Answer, BirthsError, Dialect, Encoded, HttpConfig, HttpSink, HttpStore, HttpWriter, Lines,
    encode_readings_and_deaths,
};
use crate::sink::Sink;
use crate::writer::{DeadLetter, Submission};

const STORE: &str = "InfluxDB";

/// Which write API, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InfluxApi {
    /// InfluxDB 1.x `/write` (kept by 2.x and 3.x).
    V1 {
        /// The database.
        database: String,
        /// The retention policy (`None`: the database's default).
        retention_policy: Option<String>,
        /// User and password, sent as HTTP basic authentication.
        credentials: Option<(String, String)>,
        /// `CREATE DATABASE` at connect (default `true`; needs an admin
        /// user when authentication is on: a failure is logged, not fatal).
        create_database: bool,
    },
    /// InfluxDB 2.x and 3.x `/api/v2/write` with a token.
    V2 {
        /// The organisation.
        org: String,
        /// The bucket (must exist).
        bucket: String,
        /// The API token.
        token: String,
    },
}

/// Where and how the InfluxDB sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InfluxConfig {
    /// The server's base URL (`http://127.0.0.1:8086`).
    pub url: String,
    /// The write API.
    pub api: InfluxApi,
    /// The readings' measurement (default `readings`).
    pub measurement: String,
    /// A request's timeout (default 30 s).
    pub timeout: Duration,
    /// Bytes of line protocol per request at most (default 4 MiB; InfluxDB
    /// 1.x refuses bodies over 25 MB).
    pub max_body: usize,
}

impl InfluxConfig {
    /// The v1 API on `url`, database `database`, made if missing.
    pub fn v1(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self::with_api(
            url,
            InfluxApi::V1 {
                database: database.into(),
                retention_policy: None,
                credentials: None,
                create_database: true,
            },
        )
    }

    /// The v2 API on `url`: `org`, `bucket` and a `token`.
    pub fn v2(
        url: impl Into<String>,
        org: impl Into<String>,
        bucket: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self::with_api(
            url,
            InfluxApi::V2 { org: org.into(), bucket: bucket.into(), token: token.into() },
        )
    }

    fn with_api(url: impl Into<String>, api: InfluxApi) -> Self {
        Self {
            url: url.into(),
            api,
            measurement: "readings".into(),
            timeout: Duration::from_secs(30),
            max_body: 4 << 20,
        }
    }

    /// Checks what can be checked without a server: the URL, the names.
    pub fn check(&self) -> Result<(), crate::http::StoreConfigError> {
        crate::http::check_url(&self.url)?;
        if self.measurement.is_empty() || self.measurement.contains(['\n', '\r', '\\']) {
            return Err(crate::http::StoreConfigError::new(
                "measurement",
                &self.measurement,
                "give a name without line breaks or backslashes",
            ));
        }
        let (key, name) = match &self.api {
            InfluxApi::V1 { database, .. } => ("database", database),
            InfluxApi::V2 { bucket, .. } => ("bucket", bucket),
        };
        if name.is_empty() {
            return Err(crate::http::StoreConfigError::new(
                key,
                name,
                "the name is empty; give one",
            ));
        }
        Ok(())
    }

    fn database(&self) -> &str {
        match &self.api {
            InfluxApi::V1 { database, .. } => database,
            InfluxApi::V2 { bucket, .. } => bucket,
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> http::request::Builder {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            q.append_pair(k, v);
        }
        let q = q.finish();
        let uri = format!(
            "{}{path}{}{q}",
            self.url.trim_end_matches('/'),
            if q.is_empty() { "" } else { "?" }
        );
        let b = Request::builder().method(method).uri(uri).header("Accept", "application/json");
        match &self.api {
            InfluxApi::V1 { credentials: Some((user, password)), .. } => {
                use base64::Engine as _;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                b.header("Authorization", format!("Basic {basic}"))
            }
            InfluxApi::V2 { token, .. } => b.header("Authorization", format!("Token {token}")),
            InfluxApi::V1 { .. } => b,
        }
    }

    /// The write of `body` (line protocol at `precision`: `ms` or `ns`).
    pub fn write_request(
        &self,
        precision: &str,
        body: Vec<u8>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        let b = match &self.api {
            InfluxApi::V1 { database, retention_policy, .. } => {
                let mut q = vec![("db", database.as_str()), ("precision", precision)];
                if let Some(rp) = retention_policy {
                    q.push(("rp", rp));
                }
                self.request(Method::POST, "/write", &q)
            }
            InfluxApi::V2 { org, bucket, .. } => self.request(
                Method::POST,
                "/api/v2/write",
                &[("org", org), ("bucket", bucket), ("precision", precision)],
            ),
        };
        b.header("Content-Type", "text/plain; charset=utf-8").body(body)
    }

    /// An InfluxQL query (`/query`, times as Unix ms).
    pub fn query_request(&self, q: &str) -> Result<Request<Vec<u8>>, http::Error> {
        self.request(Method::GET, "/query", &[("db", self.database()), ("epoch", "ms"), ("q", q)])
            .body(Vec::new())
    }

    /// `GET /ping`: 204 from a server that is up.
    pub fn ping_request(&self) -> Result<Request<Vec<u8>>, http::Error> {
        self.request(Method::GET, "/ping", &[]).body(Vec::new())
    }

    /// `CREATE DATABASE` for the v1 API when asked for.
    pub fn create_request(&self) -> Option<Result<Request<Vec<u8>>, http::Error>> {
        let InfluxApi::V1 { database, create_database: true, .. } = &self.api else { return None };
        let q =
            format!("CREATE DATABASE \"{}\"", database.replace('\\', "\\\\").replace('"', "\\\""));
        Some(self.request(Method::POST, "/query", &[("q", &q)]).body(Vec::new()))
    }
}

/// The server's own message in an error body: 1.x `{"error": …}`, 2.x
/// `{"code": …, "message": …}`, else the text itself.
pub fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["error", "message"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return m.to_owned();
            }
        }
    }
    let t = body.trim();
    if t.is_empty() { "no message".into() } else { t.chars().take(500).collect() }
}

/// What a write's answer means.
pub fn answer(status: u16, body: &str) -> Answer {
    match status {
        200..=299 => Answer::Written,
        400 => Answer::Refused(server_message(body)),
        413 => Answer::TooLarge,
        401 | 403 => Answer::Failed {
            status,
            message: format!(
                "{} (check the user and password, or the token and its write permission)",
                server_message(body)
            ),
        },
        _ => Answer::Failed { status, message: server_message(body) },
    }
}

/// The births an InfluxQL answer to [`BIRTHS_QUERY`] holds, edge nodes'
/// before devices', oldest first; births whose parts are not all there
/// are left out.
pub fn parse_births(body: &str) -> Result<Vec<(String, Vec<u8>)>, BirthsError> {
    use base64::Engine as _;
    use std::collections::BTreeMap;
    let v: serde_json::Value = serde_json::from_str(body).map_err(BirthsError::NotJson)?;
    let result = &v["results"][0];
    if let Some(e) = result.get("error").and_then(|e| e.as_str()) {
        return Err(BirthsError::Server(e.to_owned()));
    }
    // topic → (received, parts, part → text)
    let mut births: BTreeMap<String, (i64, i64, BTreeMap<i64, String>)> = BTreeMap::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let (Some(topic), Some(part)) = (
            series["tags"]["topic"].as_str(),
            series["tags"]["part"].as_str().and_then(|p| p.parse::<i64>().ok()),
        ) else {
            continue;
        };
        let cols: Vec<&str> =
            series["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
        let col = |row: &serde_json::Value, name: &str| {
            cols.iter().position(|c| *c == name).map(|i| row[i].clone())
        };
        let Some(row) = series["values"].as_array().and_then(|rows| rows.last()) else { continue };
        let (Some(payload), Some(parts), Some(received)) = (
            col(row, "payload").and_then(|p| p.as_str().map(str::to_owned)),
            col(row, "parts").and_then(|p| p.as_i64()),
            col(row, "received").and_then(|p| p.as_i64()),
        ) else {
            continue;
        };
        let e = births.entry(topic.to_owned()).or_insert((received, parts, BTreeMap::new()));
        // Parts of an older, longer birth may linger: the newest count wins.
        if received > e.0 {
            e.0 = received;
        }
        if part == 0 {
            e.1 = parts;
        }
        e.2.insert(part, payload);
    }
    let mut out: Vec<(bool, i64, String, Vec<u8>)> = Vec::new();
    for (topic, (received, parts, texts)) in births {
        if (0..parts).any(|k| !texts.contains_key(&k)) {
            continue;
        }
        let b64: String = (0..parts).filter_map(|k| texts.get(&k).map(String::as_str)).collect();
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
        let device = topic.split('/').nth(2) == Some("DBIRTH");
        out.push((device, received, topic, payload));
    }
    out.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    Ok(out.into_iter().map(|(_, _, t, p)| (t, p)).collect())
}

/// The query [`parse_births`] reads.
pub const BIRTHS_QUERY: &str = "SELECT last(payload) AS payload, last(parts) AS parts, last(received) AS received FROM sparkplug_births GROUP BY topic, part";

/// The two kinds of write: readings, births and descriptions at ms
/// precision; dead letters at ns, so that each has a time of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Milliseconds.
    Ms,
    /// Nanoseconds.
    Ns,
}

impl Dialect for InfluxConfig {
    type Table = Precision;
    const STORE: &'static str = STORE;

    fn encode(&self, work: &Submission, now_ms: u64) -> Encoded<Precision> {
        let mut lines = Lines::default();
        line::encode_births(&mut lines, &work.births, now_ms);
        line::encode_metrics(&mut lines, &work.metrics);
        let refused = encode_readings_and_deaths(work, |batches, death| {
            line::encode_readings(&mut lines, &self.measurement, batches, death)
        });
        Encoded { parts: vec![(Precision::Ms, lines)], refused }
    }

    fn dead_letters(&self, dead: &[DeadLetter], first_ns: u64) -> (Precision, Lines) {
        let mut lines = Lines::default();
        line::encode_dead_letters(&mut lines, dead, first_ns);
        (Precision::Ns, lines)
    }

    fn write_request(
        &self,
        table: Precision,
        body: Vec<u8>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        let precision = match table {
            Precision::Ms => "ms",
            Precision::Ns => "ns",
        };
        Self::write_request(self, precision, body)
    }

    fn answer(&self, status: u16, body: &str) -> Answer {
        answer(status, body)
    }

    fn database(&self) -> &str {
        Self::database(self)
    }

    fn max_body(&self) -> usize {
        self.max_body
    }
}

/// Writes to InfluxDB.
pub type InfluxSink = HttpSink<InfluxConfig>;

/// One writer of an [`InfluxSink`].
pub type InfluxWriter = HttpWriter<InfluxConfig>;

impl HttpConfig for InfluxConfig {
    fn agent(&self) -> HttpStore {
        HttpStore::new(STORE, &self.url, self.timeout)
    }
}

impl Sink for InfluxSink {
    type Writer = InfluxWriter;

    fn kind(&self) -> &'static str {
        STORE
    }

    async fn connect(&self) -> Result<InfluxWriter, IngestError> {
        let what = format!("reach the server at {}", self.config.url);
        self.http.run_ok(self.config.ping_request(), &what, server_message).await?;
        if let Some(create) = self.config.create_request() {
            let (status, body) = self.http.run(create, "create the database").await?;
            if !(200..300).contains(&status) || body.contains("\"error\"") {
                tracing::warn!(
                    database = self.config.database(),
                    "InfluxDB: cannot create the database ({}); writing to it anyway",
                    server_message(&body)
                );
            }
        }
        Ok(HttpWriter::new(Arc::clone(&self.config), self.http.clone()))
    }

    async fn births(&self) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        let what = "read the kept Sparkplug births";
        let body =
            self.http.run_ok(self.config.query_request(BIRTHS_QUERY), what, server_message).await?;
        self.births_in(&body, what, parse_births)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(r: &Request<Vec<u8>>) -> String {
        let mut s = format!("{} {}\n", r.method(), r.uri());
        let mut h: Vec<_> =
            r.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        h.sort();
        s.push_str(&h.join("\n"));
        s
    }

    /// The v2 write as InfluxDB 2.x documents it ("Write data with the
    /// InfluxDB API": `POST /api/v2/write?org=…&bucket=…&precision=…`,
    /// `Authorization: Token …`, a line protocol body). Debian's 1.6.7
    /// answers 404 to this path, so the request is checked against the
    /// recorded exchange, not a server.
    #[test]
    fn the_v2_write_is_the_documented_request() {
        let c = InfluxConfig::v2("http://localhost:8086/", "my-org", "plant data", "s3cr3t==");
        let r = c
            .write_request("ms", b"readings,source=s,metric=m value=1,quality=0i 1\n".to_vec())
            .unwrap();
        assert_eq!(
            head(&r),
            "POST http://localhost:8086/api/v2/write?org=my-org&bucket=plant+data&precision=ms\n\
             accept: application/json\n\
             authorization: Token s3cr3t==\n\
             content-type: text/plain; charset=utf-8"
        );
        // The answers 2.x documents: 204; 400 with a JSON `message`; 401.
        assert_eq!(answer(204, ""), Answer::Written);
        let partial = r#"{"code":"invalid","message":"partial write error (2 written): unable to parse 'x': missing fields"}"#;
        assert_eq!(
            answer(400, partial),
            Answer::Refused(
                "partial write error (2 written): unable to parse 'x': missing fields".into()
            )
        );
        let Answer::Failed { status: 401, message } =
            answer(401, r#"{"code":"unauthorized","message":"unauthorized access"}"#)
        else {
            panic!()
        };
        assert!(message.starts_with("unauthorized access (check"), "{message}");
        assert_eq!(answer(413, ""), Answer::TooLarge);
    }

    #[test]
    fn the_v1_write_names_the_database_and_authenticates() {
        let mut c = InfluxConfig::v1("http://127.0.0.1:8086", "shop floor");
        if let InfluxApi::V1 { credentials, retention_policy, .. } = &mut c.api {
            *credentials = Some(("ingest".into(), "pw".into()));
            *retention_policy = Some("a year".into());
        }
        let r = c.write_request("ns", Vec::new()).unwrap();
        assert_eq!(
            head(&r),
            "POST http://127.0.0.1:8086/write?db=shop+floor&precision=ns&rp=a+year\n\
             accept: application/json\n\
             authorization: Basic aW5nZXN0OnB3\n\
             content-type: text/plain; charset=utf-8"
        );
        let create = c.create_request().unwrap().unwrap();
        assert_eq!(create.uri(), "http://127.0.0.1:8086/query?q=CREATE+DATABASE+%22shop+floor%22");
        assert_eq!(
            answer(400, r#"{"error":"partial write: field type conflict"}"#),
            Answer::Refused("partial write: field type conflict".into())
        );
        assert_eq!(server_message("  plain text \n"), "plain text");
    }

    #[test]
    fn config_checks() {
        assert!(InfluxConfig::v1("http://127.0.0.1:8086", "db").check().is_ok());
        assert!(
            InfluxConfig::v1("https://h:8086", "db").check().unwrap_err().fix.contains("https")
        );
        assert!(InfluxConfig::v1("127.0.0.1:8086", "db").check().is_err());
        assert!(InfluxConfig::v1("http://h", "").check().is_err());
    }

    #[test]
    fn births_come_back_whole_and_in_replay_order() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let big = b64(&[9_u8; 10]);
        let (p0, p1) = big.split_at(8);
        let series = |topic: &str, part: u32, payload: &str, parts: u32, received: u64| {
            serde_json::json!({"name": "sparkplug_births", "tags": {"topic": topic, "part": part.to_string()},
                "columns": ["time", "payload", "parts", "received"], "values": [[0, payload, parts, received]]})
        };
        let body = serde_json::json!({"results": [{"statement_id": 0, "series": [
            series("spBv1.0/G/DBIRTH/E/d", 0, &b64(b"dev"), 1, 5),
            series("spBv1.0/G/NBIRTH/E", 0, p0, 2, 9),
            series("spBv1.0/G/NBIRTH/E", 1, p1, 2, 9),
            series("spBv1.0/G/NBIRTH/A", 0, &b64(b"a"), 1, 7),
            series("spBv1.0/G/NBIRTH/X", 0, p0, 2, 1), // a part missing
        ]}]});
        let got = parse_births(&body.to_string()).unwrap();
        let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["spBv1.0/G/NBIRTH/A", "spBv1.0/G/NBIRTH/E", "spBv1.0/G/DBIRTH/E/d"]);
        assert_eq!(got[1].1, vec![9_u8; 10]);
        assert_eq!(parse_births(r#"{"results":[{"statement_id":0}]}"#).unwrap(), []);
        assert!(parse_births(r#"{"results":[{"error":"database not found"}]}"#).is_err());
    }
}
