//! The errors of the ingest crate.

/// What went wrong, with what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A database operation failed.
    #[error("PostgreSQL: cannot {what}: {}", pg_message(.source))]
    Database {
        /// What was being done.
        what: String,
        /// The driver's error (with the server's message and SQLSTATE).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The ingest's writers stopped before it did (a bug: they stop with it).
    #[error("the ingest stopped: {0}")]
    Stopped(String),
    /// A store spoken to over HTTP (InfluxDB, ClickHouse) failed.
    #[error("{store}: cannot {what}: {message}")]
    Http {
        /// The store (`InfluxDB`, `ClickHouse`).
        store: &'static str,
        /// What was being done.
        what: String,
        /// The HTTP status, or `None` when no answer came (refused,
        /// timed out, cut).
        status: Option<u16>,
        /// The server's own message, or the transport's.
        message: String,
    },
}

impl IngestError {
    /// A mapper for `map_err`: `.map_err(IngestError::db("read the catalogue"))`.
    pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Database { what: what.to_owned(), source }
    }

    /// The SQLSTATE of a database error, if the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Database { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether the store could not be reached or said it is unavailable
    /// (no server message; HTTP 502, 503, 504): wait and try again.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Database { source, .. } => source.as_db_error().is_none(),
            Self::Http { status, .. } => matches!(status, None | Some(502..=504)),
            Self::Stopped(_) => false,
        }
    }

    /// Whether the server refused the data itself (SQLSTATE class 22, data
    /// exception, or 23, integrity constraint violation): writing the same
    /// rows again fails the same way, so they are isolated and
    /// dead-lettered instead of retried. For an HTTP store: 400 Bad
    /// Request.
    pub fn is_data_error(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status == Some(400),
            _ => self.sqlstate().is_some_and(|s| s.starts_with("22") || s.starts_with("23")),
        }
    }
}

/// A PostgreSQL error as a user can act on it: the server's own message,
/// SQLSTATE, detail and hint (tokio-postgres' `Display` says only
/// `db error`), or the driver's message with its cause (`connection
/// refused`…).
///
/// ```
/// # async fn f(client: tokio_postgres::Client) {
/// if let Err(e) = client.batch_execute("SELECT 1/0").await {
///     // "division by zero (SQLSTATE 22012)"
///     eprintln!("{}", shopfloor_ingest::pg_message(&e));
/// }
/// # }
/// ```
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str("; detail: ");
            s.push_str(detail);
        }
        if let Some(hint) = db.hint() {
            s.push_str("; hint: ");
            s.push_str(hint);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
