//! `kubectl weir analyze -f TEMPLATE [--arg k=v …] [--prometheus URL] [--once]`: run an analysis
//! template now, against a live Prometheus, without deploying anything. It measures with the same
//! providers and judges with the same assessment as the analysis controller, prints every
//! measurement and the verdict, and exits 0 only when the analysis would succeed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::analysis::assessment::{self, Observation};
use crate::analysis::providers::{self, ProviderError, SecretSource};
use crate::analysis::runs;
use crate::api::analysis::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, AnalysisTemplateSpec, Argument,
    MetricProvider,
};

use super::error::PluginError;
use super::located_yaml::parse_documents;
use super::output::print;
use super::style::Style;
use super::{EXIT_FAILED, EXIT_OK};

/// Flags of `analyze`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 when the analysis would succeed, 1 when it would fail, error or be inconclusive.\n\nExamples:\n  # One measurement per metric, against a port-forwarded Prometheus\n  kubectl weir analyze -f error-rate.yaml --arg service=web-canary --prometheus http://localhost:9090 --once\n  # The full analysis, honouring interval, count and initialDelay\n  kubectl weir analyze -f error-rate.yaml --arg service=web-canary"
)]
pub struct AnalyzeArgs {
    /// A file with one or more AnalysisTemplates or ClusterAnalysisTemplates (all are run together).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// An argument value, NAME=VALUE; may be repeated. Overrides the template's value.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    /// Query this Prometheus instead of the address in the template.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Take one measurement per metric now, ignoring initialDelay, interval and count; errors are not retried.
    #[arg(long)]
    pub once: bool,
}

/// Secrets cannot be read offline; say how to supply the value instead.
struct NoSecrets;

impl SecretSource for NoSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::SecretNotFound {
                namespace: namespace.to_string(),
                name: format!("{name} (key {key}; analyze reads no Secrets)"),
            })
        })
    }
}

/// The run spec for the templates in a file, with `--arg` values and the `--prometheus` override
/// applied; `once` makes every metric a single immediate measurement.
pub fn build_spec(
    templates: &[AnalysisTemplateSpec],
    overrides: &BTreeMap<String, String>,
    prometheus: Option<&str>,
    once: bool,
) -> Result<AnalysisRunSpec, String> {
    let mut spec = AnalysisRunSpec {
        metrics: Vec::new(),
        args: Vec::new(),
        dry_run: Vec::new(),
        measurement_retention: Vec::new(),
        terminate: false,
    };
    let mut args: BTreeMap<String, Argument> = BTreeMap::new();
    for t in templates {
        for m in &t.metrics {
            if spec.metrics.iter().any(|x| x.name == m.name) {
                return Err(format!(
                    "metric {:?} is defined by more than one template",
                    m.name
                ));
            }
            spec.metrics.push(m.clone());
        }
        for a in &t.args {
            args.entry(a.name.clone()).or_insert_with(|| a.clone());
        }
        spec.dry_run.extend(t.dry_run.iter().cloned());
        spec.measurement_retention
            .extend(t.measurement_retention.iter().cloned());
    }
    for (name, value) in overrides {
        if !args.contains_key(name) {
            return Err(format!(
                "--arg {name}: the templates declare no argument {name:?}"
            ));
        }
        args.insert(
            name.clone(),
            Argument {
                name: name.clone(),
                value: Some(value.clone()),
                value_from: None,
            },
        );
    }
    let mut missing = Vec::new();
    for a in args.values() {
        match (&a.value, &a.value_from) {
            (Some(_), _) => {}
            (None, Some(_)) => missing.push(format!("{} (from a Secret)", a.name)),
            (None, None) => missing.push(a.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "arguments without a value: {}; pass --arg NAME=VALUE",
            missing.join(", ")
        ));
    }
    spec.args = args.into_values().collect();
    for m in &mut spec.metrics {
        if let (Some(url), MetricProvider::Prometheus(p)) = (prometheus, &mut m.provider) {
            p.address = url.to_string();
        }
        if once {
            m.initial_delay = None;
            m.interval = None;
            m.count = Some(1);
            // One look means one: an unreachable Prometheus is reported, not retried.
            m.consecutive_error_limit = Some(0);
        } else if m.interval.is_some() && m.count.is_none() {
            // A background metric measures until its run is terminated; here nothing would end it.
            return Err(format!(
                "metric {:?} has an interval but no count, so it would measure forever; use --once",
                m.name
            ));
        }
        for arg in runs::referenced_args(m) {
            if !spec.args.iter().any(|a| a.name == arg) {
                return Err(format!(
                    "metric {:?} refers to {{{{args.{arg}}}}}, which the templates do not declare",
                    m.name
                ));
            }
        }
    }
    // Conditions may use arguments; they are checked as the controller will evaluate them.
    for m in &runs::with_literal_args_in_conditions(&spec).metrics {
        assessment::validate(m).map_err(|e| e.to_string())?;
    }
    if spec.metrics.is_empty() {
        return Err("the file has no AnalysisTemplate with metrics".into());
    }
    Ok(spec)
}

fn parse_overrides(args: &[String]) -> Result<BTreeMap<String, String>, PluginError> {
    let mut out = BTreeMap::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(PluginError::Usage(format!(
                "--arg {a:?}: expected NAME=VALUE"
            )));
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

fn read_templates(path: &PathBuf) -> Result<Vec<AnalysisTemplateSpec>, PluginError> {
    let text = std::fs::read_to_string(path).map_err(|source| PluginError::Read {
        path: path.clone(),
        source,
    })?;
    let docs = parse_documents(&text).map_err(|e| PluginError::Manifest {
        path: path.clone(),
        detail: format!("line {}: not valid YAML: {}", e.line, e.message),
    })?;
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc.str_at("kind").unwrap_or_default();
        if !matches!(kind, "AnalysisTemplate" | "ClusterAnalysisTemplate") {
            continue;
        }
        let spec = doc.get("spec").map(|s| s.to_json()).unwrap_or_default();
        let spec: AnalysisTemplateSpec =
            serde_json::from_value(spec).map_err(|e| PluginError::Manifest {
                path: path.clone(),
                detail: format!("line {}: {kind}: {e}", doc.line),
            })?;
        out.push(spec);
    }
    if out.is_empty() {
        return Err(PluginError::Manifest {
            path: path.clone(),
            detail: "no AnalysisTemplate or ClusterAnalysisTemplate in the file".into(),
        });
    }
    Ok(out)
}

/// Runs `analyze`.
pub async fn run(args: AnalyzeArgs, style: Style) -> Result<u8, PluginError> {
    let templates = read_templates(&args.file)?;
    let overrides = parse_overrides(&args.args)?;
    let spec = build_spec(
        &templates,
        &overrides,
        args.prometheus.as_deref(),
        args.once,
    )
    .map_err(|detail| PluginError::Manifest {
        path: args.file.clone(),
        detail,
    })?;
    let values: BTreeMap<String, String> = spec
        .args
        .iter()
        .filter_map(|a| Some((a.name.clone(), a.value.clone()?)))
        .collect();
    let judged = runs::with_literal_args_in_conditions(&spec);
    let mut status = AnalysisRunStatus::default();
    assessment::assess(&judged, &mut status, jiff::Timestamp::now());
    let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let due = assessment::due(&judged, &status, jiff::Timestamp::now());
        for name in &due.metrics {
            let Some(metric) = judged.metrics.iter().find(|m| &m.name == name) else {
                continue;
            };
            let started = jiff::Timestamp::now();
            let substituted = runs::substitute(metric, &values);
            let obs = match providers::provider_for(&substituted.provider)
                .measure(&NoSecrets, "default")
                .await
            {
                Ok(v) => Observation::Value(v),
                Err(e) => Observation::Error(e.to_string()),
            };
            let finished = jiff::Timestamp::now();
            let (phase, message) = assessment::judge(metric, &obs);
            let value = match &obs {
                Observation::Value(v) => Some(v.display()),
                Observation::Error(_) => None,
            };
            let n = numbers.entry(name.clone()).or_default();
            *n += 1;
            print(&format!(
                "{name} #{n}: value {}  {}  {}\n",
                value.as_deref().unwrap_or("-"),
                style.phase(phase.as_str()),
                message.as_deref().unwrap_or("")
            ))?;
            assessment::record(
                &judged,
                &mut status,
                name,
                phase,
                value,
                message,
                started,
                finished,
            );
        }
        assessment::assess(&judged, &mut status, jiff::Timestamp::now());
        if status.phase.is_completed() {
            break;
        }
        match assessment::due(&judged, &status, jiff::Timestamp::now()).next {
            // The analysis's own schedule: the next measurement is due then.
            Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(10))).await,
            None if due.metrics.is_empty() => break,
            None => {}
        }
    }
    let mut text = String::new();
    for r in &status.metric_results {
        text.push_str(&format!(
            "metric {}: {} ({} measured: {} successful, {} failed, {} inconclusive, {} errors){}\n",
            r.name,
            style.phase(r.phase.as_str()),
            r.count,
            r.successful,
            r.failed,
            r.inconclusive,
            r.error,
            if r.dry_run { " [dry run]" } else { "" }
        ));
    }
    text.push_str(&format!(
        "Decision: {}{}\n",
        style.phase(status.phase.as_str()),
        status
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    ));
    print(&text)?;
    Ok(if status.phase == AnalysisPhase::Successful {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
