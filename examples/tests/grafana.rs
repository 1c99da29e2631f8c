//! The shipped Grafana dashboards (`examples/deploy/grafana/`) without
//! Grafana: each dashboard's JSON is checked for the structure its
//! schema version declares, every query is expanded the way Grafana's
//! PostgreSQL data source does (`shopfloor_examples::grafana`), run against
//! a real PostgreSQL holding the simulator's plant (the whole reference
//! deployment, with an alarm raised), and its rows checked for the shape
//! its panel needs. Queries may read only the documented contract.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shopfloor_examples::grafana::{Context, expand, preview_page};
use shopfloor_testkit::{Chromium, artifacts_dir};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, Row, Statement};

mod support;

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards");
const CONTRACT: [&str; 3] = ["readings", "readings_1m", "alarm_journal"];

fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(DASHBOARDS)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 3, "plant overview, machine detail, alarms");
    out
}

/// Every (panel title, target) of a dashboard.
fn targets(d: &Value) -> Vec<(String, Value)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t))
        })
        .collect()
}

/// What Grafana 11 requires of a schemaVersion 39 dashboard (the fields
/// its migrations and panels read), and what shopfloor's own require.
#[test]
fn the_dashboards_have_the_structure_they_declare_and_read_only_the_contract() {
    let mut uids = Vec::new();
    for (file, d) in dashboards() {
        assert_eq!(d["schemaVersion"], 39, "{file}");
        for key in ["uid", "title"] {
            assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "{file}: {key}");
        }
        uids.push(d["uid"].as_str().unwrap().to_owned());
        assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string(), "{file}: time");
        assert!(
            d["templating"]["list"].is_array() && d["annotations"]["list"].is_array(),
            "{file}"
        );
        let mut ids = Vec::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or_default();
            ids.push(p["id"].as_u64().unwrap_or_else(|| panic!("{file}: {title}: id")));
            let g = &p["gridPos"];
            let (x, w, h) =
                (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
            assert!(
                g["y"].is_u64() && w > 0 && h > 0 && x + w <= 24,
                "{file}: {title}: gridPos {g}"
            );
            assert!(
                ["stat", "timeseries", "table", "state-timeline"]
                    .contains(&p["type"].as_str().unwrap()),
                "{file}: {title}: panel type"
            );
            assert_eq!(p["datasource"]["uid"], "shopfloor-pg", "{file}: {title}");
            let ts = p["targets"].as_array().unwrap();
            assert!(!ts.is_empty(), "{file}: {title}: no query");
            for t in ts {
                assert_eq!(t["datasource"]["uid"], "shopfloor-pg");
                assert_eq!(t["rawQuery"], true);
                assert!(
                    ["time_series", "table"].contains(&t["format"].as_str().unwrap()),
                    "{file}: {title}"
                );
                assert!(t["refId"].is_string());
            }
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{file}: panel ids repeat");
        for v in d["templating"]["list"].as_array().unwrap() {
            assert!(
                v["name"].is_string() && v["type"] == "query" && v["query"].is_string(),
                "{file}: {v}"
            );
        }
        // Only the documented views and table.
        let queries =
            targets(&d).into_iter().map(|(_, t)| t["rawSql"].as_str().unwrap().to_owned()).chain(
                d["templating"]["list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["query"].as_str().unwrap().to_owned()),
            );
        for q in queries {
            for (i, _) in q.match_indices("shopfloor.") {
                let name: String = q[i + 10..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    CONTRACT.contains(&name.as_str()),
                    "{file}: shopfloor.{name} is not part of the query contract"
                );
            }
        }
    }
    let n = uids.len();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), n, "dashboard uids repeat");
}

/// PostgreSQL's own message, not just "db error".
fn pg_error(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| format!("{}: {}", d.severity(), d.message()))
}

/// PostgreSQL's NUMERIC (`count(*) * 1000.0 / …`, `extract(epoch …)`) as
/// a float, from its binary form: digit count, weight, sign, scale, then
/// base-10000 digits.
struct Numeric(Option<f64>);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
            let b = raw.get(2 * i..2 * i + 2).ok_or("a short NUMERIC")?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        };
        let (n, weight, sign) = (word(0)? as usize, word(1)?, word(2)? as u16);
        if sign == 0xC000 {
            return Ok(Self(None)); // NaN
        }
        let mut x = 0.0;
        for i in 0..n {
            x += f64::from(word(4 + i)?) * 10_000_f64.powi(i32::from(weight) - i as i32);
        }
        Ok(Self(Some(if sign == 0x4000 { -x } else { x })))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Query results as the preview page reads them: typed columns, rows of
/// JSON values; a numeric `time` column (Grafana's `$__timeGroupAlias`
/// gives epoch seconds) becomes Unix ms, as Grafana converts it.
fn frame(stmt: &Statement, rows: &[Row]) -> Value {
    let columns: Vec<(String, Type)> =
        stmt.columns().iter().map(|c| (c.name().to_owned(), c.type_().clone())).collect();
    let kind = |(name, ty): &(String, Type)| match ty {
        &Type::TIMESTAMPTZ | &Type::TIMESTAMP => "time",
        _ if name == "time" => "time",
        &Type::BOOL => "bool",
        &Type::TEXT | &Type::VARCHAR | &Type::NAME | &Type::BPCHAR => "string",
        _ => "number",
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| {
                    let number: Option<f64> = match ty {
                        &Type::INT2 => r.get::<_, Option<i16>>(i).map(f64::from),
                        &Type::INT4 => r.get::<_, Option<i32>>(i).map(f64::from),
                        &Type::INT8 => r.get::<_, Option<i64>>(i).map(|x| x as f64),
                        &Type::FLOAT4 => r.get::<_, Option<f32>>(i).map(f64::from),
                        &Type::FLOAT8 => r.get::<_, Option<f64>>(i),
                        &Type::NUMERIC => r.get::<_, Numeric>(i).0,
                        &Type::TIMESTAMPTZ | &Type::TIMESTAMP => {
                            r.get::<_, Option<SystemTime>>(i).map(|t| {
                                t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64)
                            })
                        }
                        &Type::BOOL => {
                            return r.get::<_, Option<bool>>(i).map_or(Value::Null, Value::Bool);
                        }
                        &Type::TEXT | &Type::VARCHAR | &Type::NAME | &Type::BPCHAR => {
                            return r
                                .get::<_, Option<String>>(i)
                                .map_or(Value::Null, Value::String);
                        }
                        other => panic!("the preview cannot show column {name} of type {other}"),
                    };
                    // Epoch seconds in a time column: to ms.
                    let number =
                        number.map(|x| if name == "time" && x < 1e11 { x * 1000.0 } else { x });
                    number.map_or(Value::Null, |x| serde_json::json!(x))
                })
                .collect()
        })
        .collect();
    let columns: Vec<Value> =
        columns.iter().map(|c| serde_json::json!({"name": c.0, "type": kind(c)})).collect();
    serde_json::json!({"columns": columns, "rows": rows})
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn every_query_runs_on_the_plants_data_and_gives_its_panel_the_right_shape() {
    let dir = tempfile::tempdir().unwrap();
    let plant = support::start_plant(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (pg, conn) =
            tokio_postgres::connect(&plant.postgres.connection_string(), NoTls).await.unwrap();
        tokio::spawn(conn);
        // The built-in scenario overheats press-03 10 s in: wait for the
        // alarm, and for the first minute rollups.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready: bool = pg
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM shopfloor.alarm_journal WHERE event = 'raised')
                        AND EXISTS (SELECT 1 FROM shopfloor.readings_1m)",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(false);
            // And half a minute of the plant, for the previews' trends.
            if ready && now_ms() >= plant.sim_start_ms as i64 + 30_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no raised alarm and rollup within 60 s of the plant starting"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = now_ms();
        // Grafana's two ways of looking: the last 15 minutes at 1 s per
        // point, and the last 6 hours at 1 min per point (the rollup).
        let short = Context {
            from_ms: now - 15 * 60_000,
            to_ms: now + 1000,
            interval_ms: 1000,
            vars: BTreeMap::new(),
            timescaledb: false,
        };
        let long = Context {
            from_ms: now - 6 * 3_600_000,
            to_ms: now + 60_000,
            interval_ms: 60_000,
            ..short.clone()
        };
        let shots = artifacts_dir("dashboards").unwrap();
        let mut browser = Chromium::start_with(Path::new("/usr/bin/chromium"), (1440, 900))
            .unwrap_or_else(|e| panic!("{e}"));
        for (file, d) in dashboards() {
            // Template variables: their own query, and the overheated press.
            let mut vars = BTreeMap::new();
            for v in d["templating"]["list"].as_array().unwrap() {
                let sql = expand(v["query"].as_str().unwrap(), &short).unwrap();
                let rows = pg.query(sql.as_str(), &[]).await.unwrap_or_else(|e| {
                    panic!("{file}: variable {}: {}\n{sql}", v["name"], pg_error(&e))
                });
                let values: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                assert!(
                    values.len() >= 30,
                    "{file}: variable {} lists {} machines",
                    v["name"],
                    values.len()
                );
                let pick = values
                    .iter()
                    .find(|s| s.ends_with("/press-03"))
                    .cloned()
                    .expect("press-03 among the machines");
                vars.insert(v["name"].as_str().unwrap().to_owned(), vec![pick]);
            }
            for (title, t) in targets(&d) {
                let mut rows_somewhere = false;
                for ctx in [&short, &long] {
                    let ctx = Context { vars: vars.clone(), ..ctx.clone() };
                    let raw = t["rawSql"].as_str().unwrap();
                    let sql = expand(raw, &ctx).unwrap_or_else(|e| panic!("{file}: {title}: {e}"));
                    let stmt = pg
                        .prepare(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("{file}: {title}: {}\n{sql}", pg_error(&e)));
                    let rows = pg
                        .query(&stmt, &[])
                        .await
                        .unwrap_or_else(|e| panic!("{file}: {title}: {}\n{sql}", pg_error(&e)));
                    let cols: Vec<(&str, &Type)> =
                        stmt.columns().iter().map(|c| (c.name(), c.type_())).collect();
                    let numeric = |ty: &Type| {
                        [
                            Type::INT2,
                            Type::INT4,
                            Type::INT8,
                            Type::FLOAT4,
                            Type::FLOAT8,
                            Type::NUMERIC,
                        ]
                        .contains(ty)
                    };
                    if t["format"] == "time_series" {
                        // A time column, and numbers to plot (a text column
                        // names the series, as Grafana's long format reads it).
                        assert!(
                            cols.iter().any(|(n, ty)| *n == "time"
                                && (numeric(ty) || **ty == Type::TIMESTAMPTZ)),
                            "{file}: {title}: no time column: {cols:?}"
                        );
                        assert!(
                            cols.iter().any(|(n, ty)| *n != "time" && numeric(ty)),
                            "{file}: {title}: nothing to plot: {cols:?}"
                        );
                        assert!(
                            cols.iter()
                                .all(|(n, ty)| *n == "time" || numeric(ty) || **ty == Type::TEXT),
                            "{file}: {title}: {cols:?}"
                        );
                    }
                    if title.starts_with("Machines") {
                        assert_eq!(
                            cols.iter().map(|c| c.0).collect::<Vec<_>>(),
                            ["machine", "worst_priority"]
                        );
                        let worst: BTreeMap<String, i32> =
                            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                        assert_eq!(worst.len(), 30, "{file}: a tile per machine: {worst:?}");
                        assert!(worst["press-03"] >= 500, "{file}: press-03 overheated: {worst:?}");
                    }
                    if title.starts_with("Alarms per 10 min by area") {
                        let areas: Vec<String> = rows.iter().map(|r| r.get("area")).collect();
                        assert!(
                            areas.iter().any(|a| a == "press-shop"),
                            "{file}: the press shop's alarm: {areas:?}"
                        );
                    }
                    if title == "Active alarms" {
                        let hit = rows.iter().any(|r| {
                            r.get::<_, String>("source").ends_with("/press-03")
                                && r.get::<_, String>("acknowledgement") == "unacknowledged"
                        });
                        assert!(
                            hit,
                            "{file}: the overheated press is an active, unacknowledged alarm"
                        );
                    }
                    rows_somewhere |= !rows.is_empty();
                }
                // Every panel but the findings (none in a fresh plant) shows
                // something in one of the two ranges.
                if !title.starts_with("Chattering") {
                    assert!(rows_somewhere, "{file}: {title}: no rows in either range");
                }
            }
            // The preview: every panel drawn from its queries over the
            // plant's life so far, then a screenshot.
            let preview = Context {
                from_ms: plant.sim_start_ms as i64 - 5_000,
                to_ms: now_ms(),
                interval_ms: 1000,
                vars: vars.clone(),
                ..short.clone()
            };
            let mut frames = Vec::new();
            for p in d["panels"].as_array().unwrap() {
                let mut panel = Vec::new();
                for t in p["targets"].as_array().unwrap() {
                    let sql = expand(t["rawSql"].as_str().unwrap(), &preview).unwrap();
                    let stmt = pg.prepare(&sql).await.unwrap();
                    let rows = pg.query(&stmt, &[]).await.unwrap();
                    panel.push(frame(&stmt, &rows));
                }
                frames.push(Value::Array(panel));
            }
            let note = format!(
                "Preview drawn by shopfloor's dashboard test from each panel's real query results \
                 on the simulated plant (tests/grafana.rs), not by Grafana; Grafana's own look differs. \
                 Range: the plant's first {} s.",
                (preview.to_ms - preview.from_ms) / 1000
            );
            let html = preview_page(&d, &Value::Array(frames), &preview, &note);
            let uid = d["uid"].as_str().unwrap();
            let page = shots.join(format!("{uid}.html"));
            std::fs::write(&page, html).unwrap();
            browser.navigate(&format!("file://{}", page.display())).unwrap();
            browser
                .wait_for("document.body.dataset.drawn === 'true'", Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{file}: the preview: {e}; {:?}", browser.exceptions()));
            let empty = browser.eval("document.querySelectorAll('.empty').length").unwrap();
            browser.screenshot(&shots.join(format!("{uid}.png"))).unwrap();
            assert!(browser.exceptions().is_empty(), "{file}: the preview threw: {:?}", browser.exceptions());
            // Only the findings panel (none in a fresh plant) may be empty.
            assert!(empty.as_u64().unwrap() <= 1, "{file}: {empty} panels drew nothing");
        }
    });
    drop(plant);
}
