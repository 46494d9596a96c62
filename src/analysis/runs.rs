//! Making AnalysisRuns: templates merged with the Rollout's arguments (pure), and `{{args.NAME}}`
//! substitution at measurement time, so secret values are read when needed and never stored in a run.

use std::collections::BTreeMap;

use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisRunSpec, AnalysisTemplateSpec, Argument, DryRun, MeasurementRetention, Metric,
    MetricProvider,
};
use crate::api::rollout::{PodTemplateHashValue, RolloutAnalysis, RolloutArgumentValueFrom};

/// Why a run could not be made or measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// Two templates define a metric of the same name.
    #[error("metric {0:?} is defined by more than one template")]
    DuplicateMetric(String),
    /// A template argument has no value from the template or the Rollout.
    #[error("argument {0:?} is not supplied: give it a value in the Rollout's analysis args")]
    MissingArgument(String),
    /// A metric refers to an argument no template declares.
    #[error("metric {metric:?} refers to {{{{args.{arg}}}}}, which is not a declared argument")]
    UnknownArgument {
        /// The metric.
        metric: String,
        /// The argument.
        arg: String,
    },
    /// A Rollout argument's `valueFrom` cannot be resolved.
    #[error("argument {name:?}: {message}")]
    BadValueFrom {
        /// The argument.
        name: String,
        /// Why.
        message: String,
    },
}

/// The spec of the run for `analysis`, from its templates (in order) and the Rollout.
pub fn run_spec(
    ro: &Rollout,
    analysis: &RolloutAnalysis,
    templates: &[AnalysisTemplateSpec],
) -> Result<AnalysisRunSpec, RunError> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut args: BTreeMap<String, Argument> = BTreeMap::new();
    let mut dry_run: Vec<DryRun> = Vec::new();
    let mut retention: Vec<MeasurementRetention> = Vec::new();
    for t in templates {
        for m in &t.metrics {
            if metrics.iter().any(|x| x.name == m.name) {
                return Err(RunError::DuplicateMetric(m.name.clone()));
            }
            metrics.push(m.clone());
        }
        for a in &t.args {
            args.entry(a.name.clone()).or_insert_with(|| a.clone());
        }
        dry_run.extend(t.dry_run.iter().cloned());
        retention.extend(t.measurement_retention.iter().cloned());
    }
    for a in &analysis.args {
        let value = match (&a.value, &a.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                resolve_value_from(ro, from).map_err(|message| RunError::BadValueFrom {
                    name: a.name.clone(),
                    message,
                })?
            }
            (None, None) => {
                return Err(RunError::BadValueFrom {
                    name: a.name.clone(),
                    message: "needs value or valueFrom".into(),
                });
            }
        };
        args.insert(
            a.name.clone(),
            Argument {
                name: a.name.clone(),
                value: Some(value),
                value_from: None,
            },
        );
    }
    for a in args.values() {
        if a.value.is_none() && a.value_from.is_none() {
            return Err(RunError::MissingArgument(a.name.clone()));
        }
    }
    for m in &metrics {
        for arg in referenced_args(m) {
            if !args.contains_key(&arg) {
                return Err(RunError::UnknownArgument {
                    metric: m.name.clone(),
                    arg,
                });
            }
        }
    }
    dry_run.extend(analysis.dry_run.iter().cloned());
    retention.extend(analysis.measurement_retention.iter().cloned());
    Ok(AnalysisRunSpec {
        metrics,
        args: args.into_values().collect(),
        dry_run,
        measurement_retention: retention,
        terminate: false,
    })
}

fn resolve_value_from(ro: &Rollout, from: &RolloutArgumentValueFrom) -> Result<String, String> {
    let status = ro.status.clone().unwrap_or_default();
    match from {
        RolloutArgumentValueFrom::PodTemplateHashValue(PodTemplateHashValue::Stable) => status
            .stable_rs
            .ok_or_else(|| "the Rollout has no stable revision yet".into()),
        RolloutArgumentValueFrom::PodTemplateHashValue(PodTemplateHashValue::Latest) => {
            Ok(super::super::rollout::pod_template_hash(&ro.spec.template))
        }
        RolloutArgumentValueFrom::FieldRef(f) => field_ref(ro, &f.field_path),
    }
}

/// `metadata.name`, `metadata.labels['app']`, `spec.strategy.canary.stableService`, ...
fn field_ref(ro: &Rollout, path: &str) -> Result<String, String> {
    let v = serde_json::to_value(ro).map_err(|e| e.to_string())?;
    let mut cur = &v;
    let mut rest = path;
    while !rest.is_empty() {
        let (part, tail) = match rest.find(['.', '[']) {
            Some(0) if rest.starts_with('[') => {
                let end = rest
                    .find(']')
                    .ok_or_else(|| format!("fieldPath {path:?}: unclosed ["))?;
                let key = rest[1..end].trim_matches(['\'', '"']);
                cur = cur
                    .get(key)
                    .ok_or_else(|| format!("fieldPath {path:?}: {key} not found"))?;
                rest = rest[end + 1..].trim_start_matches('.');
                continue;
            }
            Some(i) => (&rest[..i], rest[i..].trim_start_matches('.')),
            None => (rest, ""),
        };
        cur = cur
            .get(part)
            .ok_or_else(|| format!("fieldPath {path:?}: {part} not found"))?;
        rest = tail;
    }
    match cur {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Null => Err(format!("fieldPath {path:?} is empty")),
        other => Ok(other.to_string()),
    }
}

fn metric_strings(m: &Metric) -> Vec<&str> {
    let mut out: Vec<&str> = m
        .success_condition
        .iter()
        .chain(m.failure_condition.iter())
        .map(String::as_str)
        .collect();
    match &m.provider {
        MetricProvider::Prometheus(p) => {
            out.push(p.address.as_str());
            out.push(p.query.as_str());
            out.extend(p.headers.iter().map(|h| h.value.as_str()));
        }
        MetricProvider::Web(w) => {
            out.push(w.url.as_str());
            out.extend(w.headers.iter().map(|h| h.value.as_str()));
            out.extend(w.body.as_deref());
            out.extend(w.json_path.as_deref());
        }
    }
    out
}

/// The argument names a metric refers to.
pub fn referenced_args(m: &Metric) -> Vec<String> {
    let mut names = Vec::new();
    for s in metric_strings(m) {
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let inner = after[..end].trim();
            if let Some(name) = inner.strip_prefix("args.") {
                names.push(name.trim().to_string());
            }
            rest = &after[end + 2..];
        }
    }
    names
}

fn substitute_str(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let inner = after[..end].trim();
                match inner.strip_prefix("args.").and_then(|n| args.get(n.trim())) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("{{");
                        out.push_str(&after[..end]);
                        out.push_str("}}");
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The spec with `{{args.NAME}}` in success and failure conditions replaced by the arguments that have
/// literal values. Secret-backed arguments stay as written, so a condition naming one fails to compile
/// (an Error naming the expression) instead of quoting the secret in a message.
pub fn with_literal_args_in_conditions(spec: &AnalysisRunSpec) -> AnalysisRunSpec {
    let literal: BTreeMap<String, String> = spec
        .args
        .iter()
        .filter_map(|a| Some((a.name.clone(), a.value.clone()?)))
        .collect();
    let mut out = spec.clone();
    for m in &mut out.metrics {
        m.success_condition = m
            .success_condition
            .as_deref()
            .map(|c| substitute_str(c, &literal));
        m.failure_condition = m
            .failure_condition
            .as_deref()
            .map(|c| substitute_str(c, &literal));
    }
    out
}

/// `text` with every secret value replaced by `***`, longest first (so a secret that contains
/// another is hidden whole). A provider's error may quote the URL or query that a secret argument
/// was substituted into; this keeps the value out of the run's status.
pub fn redact_secrets(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in sorted {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The metric with `{{args.NAME}}` replaced by the resolved values.
pub fn substitute(m: &Metric, args: &BTreeMap<String, String>) -> Metric {
    let mut m = m.clone();
    m.success_condition = m
        .success_condition
        .as_deref()
        .map(|c| substitute_str(c, args));
    m.failure_condition = m
        .failure_condition
        .as_deref()
        .map(|c| substitute_str(c, args));
    match &mut m.provider {
        MetricProvider::Prometheus(p) => {
            p.address = substitute_str(&p.address, args);
            p.query = substitute_str(&p.query, args);
            for h in &mut p.headers {
                h.value = substitute_str(&h.value, args);
            }
        }
        MetricProvider::Web(w) => {
            w.url = substitute_str(&w.url, args);
            for h in &mut w.headers {
                h.value = substitute_str(&h.value, args);
            }
            w.body = w.body.as_deref().map(|b| substitute_str(b, args));
            w.json_path = w.json_path.as_deref().map(|j| substitute_str(j, args));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_values_are_redacted_from_messages() {
        let secrets = vec!["tok".to_owned(), "tok-123".to_owned(), String::new()];
        let cases = [
            (
                "GET https://m.example/tok-123/rate failed",
                "GET https://m.example/***/rate failed",
            ),
            ("key tok and tok-123", "key *** and ***"),
            ("nothing secret", "nothing secret"),
        ];
        for (text, want) in cases {
            assert_eq!(super::redact_secrets(text, &secrets), want, "{text}");
        }
    }

    use super::*;
    use serde_json::json;

    fn ro() -> Rollout {
        serde_json::from_value(json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "shop"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w", "image": "w:2"}]}},
                "strategy": {"canary": {"stableService": "web-stable"}}},
            "status": {"stableRS": "abc"}}))
        .unwrap()
    }

    fn template() -> AnalysisTemplateSpec {
        serde_json::from_value(json!({"args": [{"name": "service"}, {"name": "hash"}, {"name": "threshold", "value": "0.05"}],
            "metrics": [{"name": "error-rate", "successCondition": "result[0] < {{args.threshold}}",
                "provider": {"prometheus": {"address": "http://prom:9090", "query": "rate(errors{service=\"{{args.service}}\",hash=\"{{ args.hash }}\"}[1m])"}}}]}))
        .unwrap()
    }

    #[test]
    fn rollout_args_fill_template_args_and_substitute_at_measure_time() {
        let analysis: RolloutAnalysis = serde_json::from_value(json!({"templates": [{"templateName": "t"}],
            "args": [{"name": "service", "valueFrom": {"fieldRef": {"fieldPath": "spec.strategy.canary.stableService"}}},
                     {"name": "hash", "valueFrom": {"podTemplateHashValue": "Stable"}}]})).unwrap();
        let spec = run_spec(&ro(), &analysis, &[template()]).unwrap();
        let values: BTreeMap<String, String> = spec
            .args
            .iter()
            .map(|a| (a.name.clone(), a.value.clone().unwrap()))
            .collect();
        assert_eq!(values["service"], "web-stable");
        assert_eq!(values["hash"], "abc");
        let m = substitute(&spec.metrics[0], &values);
        let MetricProvider::Prometheus(p) = &m.provider else {
            panic!()
        };
        assert_eq!(
            p.query,
            "rate(errors{service=\"web-stable\",hash=\"abc\"}[1m])"
        );
    }

    #[test]
    fn missing_and_unknown_arguments_are_errors() {
        let analysis: RolloutAnalysis = serde_json::from_value(
            json!({"templates": [{"templateName": "t"}], "args": [{"name": "hash", "value": "x"}]}),
        )
        .unwrap();
        assert_eq!(
            run_spec(&ro(), &analysis, &[template()]).unwrap_err(),
            RunError::MissingArgument("service".into())
        );
        let mut t = template();
        t.args.retain(|a| a.name != "hash");
        let analysis: RolloutAnalysis = serde_json::from_value(json!({"templates": [{"templateName": "t"}], "args": [{"name": "service", "value": "s"}]})).unwrap();
        assert!(
            matches!(run_spec(&ro(), &analysis, &[t]).unwrap_err(), RunError::UnknownArgument { arg, .. } if arg == "hash")
        );
    }

    #[test]
    fn conditions_get_literal_arguments_but_never_secret_ones() {
        let spec: AnalysisRunSpec = serde_json::from_value(json!({
            "args": [{"name": "limit", "value": "0.05"}, {"name": "token", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "metrics": [{"name": "m", "successCondition": "result < {{args.limit}}", "failureCondition": "result > {{args.token}}",
                "provider": {"web": {"url": "http://x"}}}]})).unwrap();
        let out = with_literal_args_in_conditions(&spec);
        assert_eq!(
            out.metrics[0].success_condition.as_deref(),
            Some("result < 0.05")
        );
        assert_eq!(
            out.metrics[0].failure_condition.as_deref(),
            Some("result > {{args.token}}")
        );
    }

    #[test]
    fn field_refs_read_labels_and_metadata() {
        assert_eq!(field_ref(&ro(), "metadata.labels['app']").unwrap(), "shop");
        assert_eq!(field_ref(&ro(), "metadata.namespace").unwrap(), "prod");
        assert!(field_ref(&ro(), "metadata.labels['nope']").is_err());
    }
}
