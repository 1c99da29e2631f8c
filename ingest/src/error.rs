//! The errors of the ingest crate.

/// What went wrong, with what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A database operation failed.
    #[error("PostgreSQL: cannot {what}: {source}")]
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
            Self::Stopped(_) => None,
        }
    }
}
