//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for to print columns.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A Table of `objects` with NAME, the kind's printer columns and AGE.
pub fn table(
    rt: &ResourceType,
    objects: &[&Value],
    rv: Option<String>,
    now: jiff::Timestamp,
) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in &rt.printer_columns {
        columns.push(json!({"name": c.name, "type": c.type_, "format": "", "description": c.description, "priority": c.priority}));
    }
    let has_age = rt
        .printer_columns
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case("age"));
    if !has_age {
        columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![json!(
                obj.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )];
            for c in &rt.printer_columns {
                let v = json_path(obj, &c.json_path);
                cells.push(match (c.type_.as_str(), v) {
                    ("date", Some(Value::String(ts))) => json!(age(ts, now)),
                    (_, Some(v)) => v.clone(),
                    (_, None) => Value::Null,
                });
            }
            if !has_age {
                let ts = obj
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                cells.push(json!(age(ts, now)));
            }
            json!({"cells": cells, "object": obj})
        })
        .collect();
    let mut meta = serde_json::Map::new();
    if let Some(rv) = rv {
        meta.insert("resourceVersion".into(), json!(rv));
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

/// Evaluates a simple JSONPath (`.status.phase`, `.spec.ports[0].port`, `{.a.b}`).
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// A timestamp's age as kubectl prints it (`45s`, `5m2s`, `3h`, `2d4h`, ...).
pub fn age(ts: &str, now: jiff::Timestamp) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    human_duration(now.as_second().saturating_sub(t.as_second()).max(0))
}

/// Kubernetes' HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let m = secs / 60;
    let h = secs / 3600;
    let d = h / 24;
    let y = d / 365;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if m < 10 => {
            if s % 60 == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{}s", s % 60)
            }
        }
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => {
            if m % 60 == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{}m", m % 60)
            }
        }
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => {
            if h % 24 == 0 {
                format!("{d}d")
            } else {
                format!("{d}d{}h", h % 24)
            }
        }
        _ if d < 365 * 2 => format!("{d}d"),
        _ if d < 365 * 8 => {
            if d % 365 == 0 {
                format!("{y}y")
            } else {
                format!("{y}y{}d", d % 365)
            }
        }
        _ => format!("{y}y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (302, "5m2s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (50 * 3600, "2d2h"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn json_paths_follow_fields_and_indices() {
        let v = json!({"spec": {"ports": [{"port": 80}]}, "status": {"phase": "Healthy"}});
        assert_eq!(json_path(&v, ".status.phase"), Some(&json!("Healthy")));
        assert_eq!(json_path(&v, "{.spec.ports[0].port}"), Some(&json!(80)));
        assert_eq!(json_path(&v, ".status.missing"), None);
    }
}
