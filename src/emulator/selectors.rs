//! Label and field selectors as list and watch requests send them.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector` query parameter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Why a selector did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses the string form (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels and matchExpressions).
    pub fn from_object(sel: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().into(),
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                requirements.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => return Err(SelectorError(format!("unknown operator {other:?}"))),
                });
            }
        }
        Ok(Self { requirements })
    }

    /// True when no requirement is set.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let err = || SelectorError(part.to_string());
    if let Some(key) = part.strip_prefix('!') {
        return valid_key(key.trim())
            .map(|k| Requirement::DoesNotExist(k.into()))
            .ok_or_else(err);
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some(idx) = part.find(op) {
            let key = valid_key(part[..idx].trim()).ok_or_else(err)?;
            let rest = part[idx + op.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(err)?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return Ok(if negate {
                Requirement::NotIn(key.into(), values)
            } else {
                Requirement::In(key.into(), values)
            });
        }
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(idx) = part.find(op) {
            let key = valid_key(part[..idx].trim()).ok_or_else(err)?;
            let value = part[idx + op.len()..].trim().to_string();
            return Ok(if negate {
                Requirement::NotEquals(key.into(), value)
            } else {
                Requirement::Equals(key.into(), value)
            });
        }
    }
    valid_key(part)
        .map(|k| Requirement::Exists(k.into()))
        .ok_or_else(err)
}

fn valid_key(k: &str) -> Option<&str> {
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then_some(k)
}

/// A parsed `fieldSelector` query parameter: `field=value` and `field!=value` terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses the selector and rejects fields the kind does not support, as the apiserver does.
    pub fn parse(s: &str, kind: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !field_supported(kind, field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), value.trim().to_string(), negate));
        }
        Ok(Self { terms })
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, value, negate)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) != *negate
        })
    }
}

fn field_supported(kind: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match kind {
        "Pod" => matches!(
            field,
            "spec.nodeName" | "status.phase" | "spec.restartPolicy" | "status.podIP"
        ),
        "Event" => {
            field.starts_with("involvedObject.")
                || matches!(
                    field,
                    "reason"
                        | "type"
                        | "source"
                        | "regarding.name"
                        | "regarding.kind"
                        | "regarding.namespace"
                )
        }
        "Secret" => field == "type",
        "Namespace" => field == "status.phase",
        "ReplicaSet" => field == "status.replicas",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let cases = [
            ("app=web", json!({"app": "web"}), true),
            ("app==web", json!({"app": "api"}), false),
            ("app!=web", json!({}), true),
            ("tier in (a, b)", json!({"tier": "b"}), true),
            ("tier notin (a,b)", json!({"tier": "b"}), false),
            ("tier notin (a,b)", json!({}), true),
            ("app", json!({"app": ""}), true),
            ("!app", json!({"app": "x"}), false),
            (
                "app=web,tier in (a,b)",
                json!({"app": "web", "tier": "a"}),
                true,
            ),
            ("", json!({}), true),
        ];
        for (sel, labels, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&obj(labels.clone())), want, "{sel} on {labels}");
        }
    }

    #[test]
    fn bad_label_selectors_are_rejected() {
        for sel in ["a in b", "=x", "a b=c"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors_support_name_and_kind_specific_fields() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=p", "Pod")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("status.phase!=Running", "Pod")
                .unwrap()
                .matches(&pod)
        );
        let err = FieldSelector::parse("spec.foo=1", "Rollout").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: field label not supported: spec.foo"
        );
    }

    #[test]
    fn object_selectors_use_match_labels_and_expressions() {
        let s = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}))
        .unwrap();
        assert!(s.matches(&obj(json!({"app": "web", "tier": "a"}))));
        assert!(!s.matches(&obj(json!({"app": "web"}))));
    }
}
