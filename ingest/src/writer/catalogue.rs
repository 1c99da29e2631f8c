//! The metrics catalogue: ids for (source, metric), bounded, described by births; and the births kept for a restart.

use super::*;

/// What a source says about one of its metrics (a Sparkplug birth: the
/// datatype, `engUnit`, and other properties), for `shopfloor.metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The source, as in the readings.
    pub source: String,
    /// The metric's name.
    pub name: String,
    /// The datatype's name (Sparkplug's: `Double`, `Int32`, `Boolean`…).
    pub datatype: Option<String>,
    /// The engineering unit.
    pub unit: Option<String>,
    /// Other properties as a JSON object (`engLow`, `engHigh`…).
    pub properties: Option<String>,
}

impl MetricInfo {
    /// `source`'s metric `name`, nothing said about it yet.
    pub fn new(source: impl Into<String>, name: impl Into<String>) -> Self {
        Self { source: source.into(), name: name.into(), ..Self::default() }
    }
}

/// The datatype recorded for a metric first seen with this value (when no
/// birth described it).
pub(super) fn value_type(v: &shopfloor_schemas::Value) -> &'static str {
    use shopfloor_schemas::Value as V;
    match v {
        V::Bool(_) => "Boolean",
        V::I64(_) => "Int64",
        V::U64(_) => "UInt64",
        V::F64(_) => "Double",
        V::String(_) => "String",
        V::Bytes(_) => "Bytes",
        _ => "Unknown",
    }
}

impl Writer {
    /// Catalogue ids for (source, name, datatype) triples, created where
    /// missing (an existing entry keeps its datatype).
    pub(super) async fn register(
        &mut self,
        keys: &[(String, String, &'static str)],
    ) -> Result<(), IngestError> {
        let admitted = self.admit(keys.iter().map(|k| (k.0.as_str(), k.1.as_str()))).await?;
        let mut keep = Vec::with_capacity(keys.len());
        for (k, ok) in keys.iter().zip(admitted) {
            if ok {
                keep.push(k);
            } else {
                self.refused.insert((k.0.clone(), k.1.clone()));
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        let sources: Vec<&str> = keep.iter().map(|k| k.0.as_str()).collect();
        let names: Vec<&str> = keep.iter().map(|k| k.1.as_str()).collect();
        let types: Vec<&str> = keep.iter().map(|k| k.2).collect();
        let added = self
            .client
            .execute(
                "INSERT INTO shopfloor.metrics (source, name, datatype)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (source, name) DO NOTHING",
                &[&sources, &names, &types],
            )
            .await
            .map_err(IngestError::db("add metrics to the catalogue"))?;
        self.catalogue = self.catalogue.map(|n| n + added);
        let rows = self
            .client
            .query(
                "SELECT m.id, m.source, m.name FROM shopfloor.metrics m
                 JOIN unnest($1::text[], $2::text[]) AS k(source, name)
                   ON m.source = k.source AND m.name = k.name",
                &[&sources, &names],
            )
            .await
            .map_err(IngestError::db("read catalogue ids"))?;
        self.cache_ids(&rows);
        Ok(())
    }
    /// Counts the catalogue.
    pub(super) async fn count_catalogue(&mut self) -> Result<u64, IngestError> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM shopfloor.metrics", &[])
            .await
            .map_err(IngestError::db("count the catalogue"))?
            .get(0);
        let n = u64::try_from(n).unwrap_or(0);
        self.catalogue = Some(n);
        Ok(n)
    }

    /// Which of `keys` (source, name) may be in the catalogue: those there
    /// already, and new ones while it holds fewer than the limit.
    pub(super) async fn admit<'k>(
        &mut self,
        keys: impl ExactSizeIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Vec<bool>, IngestError> {
        let n = keys.len() as u64;
        let have = match self.catalogue {
            Some(c) => c,
            None => self.count_catalogue().await?,
        };
        // Room for every one even if all are new: nothing to look up.
        if have + n <= self.max_catalogue {
            return Ok(vec![true; keys.len()]);
        }
        // Near the limit: count again (other writers add too), and find
        // which are there already.
        let have = self.count_catalogue().await?;
        let (sources, names): (Vec<&str>, Vec<&str>) = keys.unzip();
        let there: HashSet<i64> = self
            .client
            .query(
                "SELECT k.o FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(source, name, o)
                 JOIN shopfloor.metrics m ON m.source = k.source AND m.name = k.name",
                &[&sources, &names],
            )
            .await
            .map_err(IngestError::db("look up catalogue entries"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut room = self.max_catalogue.saturating_sub(have);
        Ok((1..=sources.len() as i64)
            .map(|o| {
                if there.contains(&o) {
                    true
                } else if room > 0 {
                    room -= 1;
                    true
                } else {
                    false
                }
            })
            .collect())
    }

    /// Keeps catalogue ids (rows of id, source, name).
    pub(super) fn cache_ids(&mut self, rows: &[tokio_postgres::Row]) {
        for row in rows {
            let fresh =
                self.ids.entry(row.get(1)).or_default().insert(row.get(2), row.get(0)).is_none();
            self.cached += usize::from(fresh);
        }
    }

    /// Keeps the latest Sparkplug birth (NBIRTH or DBIRTH: its topic and
    /// payload) of each edge node and device, for [`births`](Self::births)
    /// after a restart.
    pub async fn remember_births(
        &mut self,
        births: &[(String, Vec<u8>)],
    ) -> Result<(), IngestError> {
        if births.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = births.iter().map(|(t, _)| t.as_str()).collect();
        let payloads: Vec<&[u8]> = births.iter().map(|(_, p)| p.as_slice()).collect();
        self.client
            .execute(
                "INSERT INTO shopfloor.sparkplug_births AS b (topic, payload)
                 SELECT DISTINCT ON (t) t, p
                 FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS k(t, p, o)
                 ORDER BY t, o DESC -- the latest birth wins
                 ON CONFLICT (topic) DO UPDATE SET payload = EXCLUDED.payload, received_at = now()",
                &[&topics, &payloads],
            )
            .await
            .map_err(IngestError::db("remember Sparkplug births"))?;
        Ok(())
    }

    /// The births kept by [`remember_births`](Self::remember_births), edge
    /// nodes' before devices', oldest first: replay them in this order.
    pub async fn births(client: &Client) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        let rows = client
            .query(
                "SELECT topic, payload FROM shopfloor.sparkplug_births
                 ORDER BY split_part(topic, '/', 3) = 'DBIRTH', received_at, topic",
                &[],
            )
            .await
            .map_err(IngestError::db("read the kept Sparkplug births"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Records what sources say about their metrics (datatype, unit,
    /// properties): new entries are created, known ones updated with what
    /// is given (a rebirth may change a unit).
    pub async fn describe(&mut self, infos: &[MetricInfo]) -> Result<(), IngestError> {
        if infos.is_empty() {
            return Ok(());
        }
        let admitted =
            self.admit(infos.iter().map(|i| (i.source.as_str(), i.name.as_str()))).await?;
        let kept: Vec<MetricInfo>;
        let infos = if admitted.iter().all(|&ok| ok) {
            infos
        } else {
            kept =
                infos.iter().zip(admitted).filter(|(_, ok)| *ok).map(|(i, _)| i.clone()).collect();
            &kept
        };
        if infos.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&MetricInfo) -> Option<&str>| -> Vec<Option<&str>> {
            infos.iter().map(f).collect()
        };
        let sources = col(|i| Some(i.source.as_str()));
        let names = col(|i| Some(i.name.as_str()));
        let types = col(|i| i.datatype.as_deref());
        let units = col(|i| i.unit.as_deref());
        let props = col(|i| i.properties.as_deref());
        let rows = self
            .client
            .query(
                "INSERT INTO shopfloor.metrics AS m (source, name, datatype, unit, properties)
                 SELECT DISTINCT ON (s, n) s, n, t, u, p::jsonb
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                      WITH ORDINALITY AS k(s, n, t, u, p, o)
                 ORDER BY s, n, o DESC -- the latest birth wins
                 ON CONFLICT (source, name) DO UPDATE SET
                   datatype = coalesce(EXCLUDED.datatype, m.datatype),
                   unit = coalesce(EXCLUDED.unit, m.unit),
                   properties = coalesce(EXCLUDED.properties, m.properties)
                 RETURNING id, source, name, xmax = 0",
                &[&sources, &names, &types, &units, &props],
            )
            .await
            .map_err(IngestError::db("describe metrics in the catalogue"))?;
        let added = rows.iter().filter(|r| r.get::<_, bool>(3)).count() as u64;
        self.catalogue = self.catalogue.map(|n| n + added);
        self.cache_ids(&rows);
        Ok(())
    }
}
