/*!
Helpers that turn a request's parameters into `gh` arguments.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use crate::protocol::github::{self as catalogue, DEFAULT_LIMIT};

/// `--limit N` (the request's limit, else 30).
pub(super) fn limit(params: &Map<String, Value>) -> String {
    params.get("limit").and_then(catalogue::positive_integer).unwrap_or(DEFAULT_LIMIT).to_string()
}

pub(super) fn number(params: &Map<String, Value>, key: &str) -> String {
    params.get(key).and_then(catalogue::positive_integer).map(|n| n.to_string()).unwrap_or_default()
}

/// Appends `flag value` when `key` is a non-empty string.
pub(super) fn flag(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    if let Some(v) = params.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
        argv.extend([flag.to_owned(), v.to_owned()]);
    }
}

/// Appends `flag value` for each non-empty string of `key` (a string or
/// an array of strings).
pub(super) fn flags(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    let values: Vec<&str> = match params.get(key) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    for v in values.into_iter().filter(|v| !v.is_empty()) {
        argv.extend([flag.to_owned(), v.to_owned()]);
    }
}

pub(super) fn switch(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    if params.get(key) == Some(&Value::Bool(true)) {
        argv.push(flag.to_owned());
    }
}

pub(super) fn repo(argv: &mut Vec<String>, params: &Map<String, Value>) {
    flag(argv, params, "repo", "--repo");
}

pub(super) fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
