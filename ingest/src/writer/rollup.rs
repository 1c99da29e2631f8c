//! The native rollups' deltas: per metric and minute, added in the transaction that stores the rows.

use super::*;

/// The aggregate of a batch's numeric rows of one metric in one minute.
#[derive(Clone, Copy, Debug)]
pub(super) struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
    last: f64,
    last_ms: u64,
}

/// The aggregates of one batch by (metric id, minute since the epoch), as
/// the columns of `rollup_delta`.
#[derive(Debug, Default)]
pub(super) struct Deltas {
    pub(super) by_key: HashMap<(i32, u64), Agg>,
}

impl Deltas {
    pub(super) fn add(&mut self, id: i32, ms: u64, x: f64) {
        self.by_key
            .entry((id, ms / MINUTE_MS))
            .and_modify(|a| {
                a.min = a.min.min(x);
                a.max = a.max.max(x);
                a.sum += x;
                a.count += 1;
                if ms >= a.last_ms {
                    (a.last, a.last_ms) = (x, ms);
                }
            })
            .or_insert(Agg { min: x, max: x, sum: x, count: 1, last: x, last_ms: ms });
    }
}

pub(super) fn system_time(unix_ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms)
}

/// The batch's aggregates into `rollup_delta`, one statement.
pub(super) async fn insert_deltas(
    tx: &tokio_postgres::Transaction<'_>,
    d: &Deltas,
) -> Result<(), IngestError> {
    let n = d.by_key.len();
    let (mut ids, mut buckets) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut mins, mut maxs, mut sums) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut lasts, mut times) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (&(id, minute), a) in &d.by_key {
        ids.push(id);
        buckets.push(system_time(minute * MINUTE_MS));
        mins.push(a.min);
        maxs.push(a.max);
        sums.push(a.sum);
        counts.push(a.count);
        lasts.push(a.last);
        times.push(system_time(a.last_ms));
    }
    tx.execute(
        "INSERT INTO shopfloor.rollup_delta
         SELECT * FROM unnest($1::int4[], $2::timestamptz[], $3::float8[], $4::float8[],
                              $5::float8[], $6::int8[], $7::float8[], $8::timestamptz[])",
        &[&ids, &buckets, &mins, &maxs, &sums, &counts, &lasts, &times],
    )
    .await
    .map_err(IngestError::db("add to shopfloor.rollup_delta"))?;
    Ok(())
}
