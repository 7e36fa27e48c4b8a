/*!
The `pr.checks` watch: polling `gh` until the checks conclude.
*/
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::run::Gh;
use super::{BrokerError, GithubConfig, gh_failed, shape};
use crate::protocol::message::ErrorCode;

/// `pr.checks` with `watch:true`: polls until the checks conclude, none
/// appear within 120 s, the limit passes or the request is cancelled.
pub(super) fn watch(
    config: &GithubConfig,
    gh: &Gh<'_>,
    argv: &[String],
) -> Result<Map<String, Value>, BrokerError> {
    let started = Instant::now();
    let scaled = |s: u64| Duration::from_secs_f64(s as f64 * config.time_scale);
    let (mut polls, mut failures) = (0u64, 0u32);
    let mut last = json!([]);
    let mut concluded = false;
    loop {
        if gh.cancelled() {
            break;
        }
        match gh.json_tolerant(argv) {
            Ok(rows) => {
                failures = 0;
                polls += 1;
                let checks = rows.as_array().cloned().unwrap_or_default();
                concluded = !checks.is_empty()
                    && checks.iter().all(|c| c.get("bucket").and_then(Value::as_str) != Some("pending"));
                last = Value::Array(checks);
                if concluded {
                    break;
                }
            }
            Err(e) if e.code == ErrorCode::Cancelled => break,
            Err(e) => {
                failures += 1;
                if failures > 3 {
                    return Err(gh_failed(e));
                }
            }
        }
        let elapsed = started.elapsed();
        let none = last.as_array().is_none_or(Vec::is_empty);
        if (none && elapsed >= scaled(120)) || elapsed >= config.watch_limit {
            break;
        }
        let nap = if elapsed < scaled(30) { scaled(10) } else { scaled(30) };
        if gh.nap(nap.min(config.watch_limit - elapsed)) {
            break;
        }
    }
    let mut data = shape::watch_checks(&last);
    data.insert("concluded".into(), json!(concluded));
    data.insert("cancelled".into(), json!(gh.cancelled()));
    data.insert("elapsedMs".into(), json!(started.elapsed().as_secs_f64() * 1000.0));
    data.insert("polls".into(), json!(polls));
    Ok(data)
}
