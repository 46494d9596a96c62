//! `kubectl weir lint -f FILE|DIR`: offline checks of weir's own kinds (Rollout, AnalysisTemplate,
//! ClusterAnalysisTemplate, AnalysisRun, GitSync, AlertProvider), reported as `file:line: message`.
//!
//! Each object is checked against the CRD schema weir generates (through the same structural-schema
//! validation the emulator uses), then against weir's types, then against rules no schema can say:
//! durations that do not parse, CEL that does not compile, `{{args.X}}` that no argument declares,
//! analysis templates that are not defined, template arguments no one supplies, and Services and
//! routes that the files do not define. A missing template or argument is an error, because the
//! Rollout would wait at that step forever; a Service or route defined elsewhere is common, so its
//! absence is a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::analysis::assessment;
use crate::analysis::runs::{referenced_args, substitute};
use crate::api::analysis::{AnalysisTemplateSpec, MetricProvider};
use crate::api::rollout::{CanaryStep, RolloutAnalysis, RolloutStrategy};
use crate::api::{GitSync, Rollout};

use super::error::PluginError;
use super::located_yaml::{Located, parse_documents};
use super::output::print;
use super::{EXIT_FAILED, EXIT_OK};

/// Flags of `lint`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  kubectl weir lint -f rollout.yaml\n  kubectl weir lint -f deploy/ -f analysis-templates/"
)]
pub struct LintArgs {
    /// A file, or a directory searched for *.yaml and *.yml; may be repeated.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR"
    )]
    pub files: Vec<PathBuf>,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The object would be rejected, or would never progress.
    Error,
    /// Probably wrong, but may be fine (e.g. a Service defined in another file).
    Warning,
}

/// One problem at one place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// The line, 1-based.
    pub line: u64,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {severity}: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// The result of linting some files.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// weir objects checked.
    pub objects: usize,
    /// Every finding, in file and line order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// A document, where it came from.
struct Doc {
    file: PathBuf,
    root: Located,
}

impl Doc {
    fn finding(&self, path: &str, severity: Severity, message: impl Into<String>) -> Finding {
        Finding {
            file: self.file.clone(),
            line: self.root.line_of(path),
            severity,
            message: message.into(),
        }
    }
    fn kind(&self) -> &str {
        self.root.str_at("kind").unwrap_or_default()
    }
    fn api_version(&self) -> &str {
        self.root.str_at("apiVersion").unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.root
            .get("metadata")
            .and_then(|m| m.str_at("name"))
            .unwrap_or_default()
    }
}

/// The YAML files under `paths`, in a stable order.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PluginError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| PluginError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PluginError> {
    let read = |source| PluginError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Lints the files: each on its own, then the references between all of them.
pub fn lint_files(files: &[PathBuf]) -> Result<Report, PluginError> {
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|source| PluginError::Read {
            path: file.clone(),
            source,
        })?;
        match parse_documents(&text) {
            Ok(roots) => docs.extend(roots.into_iter().map(|root| Doc {
                file: file.clone(),
                root,
            })),
            Err(e) => report.findings.push(Finding {
                file: file.clone(),
                line: e.line,
                severity: Severity::Error,
                message: format!("not valid YAML: {}", e.message),
            }),
        }
    }
    let defined = Defined::from(&docs);
    for doc in &docs {
        if !doc.api_version().starts_with("weir.io/") {
            continue;
        }
        report.objects += 1;
        check_doc(doc, &defined, &mut report.findings);
    }
    report.findings.sort();
    report.findings.dedup();
    Ok(report)
}

/// What the linted files define, for cross-references.
#[derive(Default)]
struct Defined {
    /// Templates by name; `None` when the template itself is invalid (reported on its own), so a
    /// Rollout naming it is not told the template is missing.
    templates: BTreeMap<String, Option<AnalysisTemplateSpec>>,
    cluster_templates: BTreeMap<String, Option<AnalysisTemplateSpec>>,
    services: BTreeSet<String>,
    http_routes: BTreeSet<String>,
    virtual_services: BTreeSet<String>,
}

impl Defined {
    fn from(docs: &[Doc]) -> Defined {
        let mut d = Defined::default();
        for doc in docs {
            let name = doc.name().to_string();
            let spec = doc.root.get("spec").map(Located::to_json);
            match (doc.api_version(), doc.kind()) {
                (v, "AnalysisTemplate") if v.starts_with("weir.io/") => {
                    let spec = spec.and_then(|s| serde_json::from_value(s).ok());
                    d.templates.insert(name, spec);
                }
                (v, "ClusterAnalysisTemplate") if v.starts_with("weir.io/") => {
                    let spec = spec.and_then(|s| serde_json::from_value(s).ok());
                    d.cluster_templates.insert(name, spec);
                }
                ("v1", "Service") => {
                    d.services.insert(name);
                }
                (v, "HTTPRoute") if v.starts_with("gateway.networking.k8s.io/") => {
                    d.http_routes.insert(name);
                }
                (v, "VirtualService") if v.starts_with("networking.istio.io/") => {
                    d.virtual_services.insert(name);
                }
                _ => {}
            }
        }
        d
    }
}

const KINDS: [&str; 6] = [
    "Rollout",
    "AnalysisTemplate",
    "ClusterAnalysisTemplate",
    "AnalysisRun",
    "GitSync",
    "AlertProvider",
];

fn check_doc(doc: &Doc, defined: &Defined, out: &mut Vec<Finding>) {
    use Severity::Error;
    let kind = doc.kind().to_string();
    if doc.api_version() != crate::api::API_VERSION {
        out.push(doc.finding(
            "apiVersion",
            Error,
            format!(
                "apiVersion {} is not served by weir; use {}",
                doc.api_version(),
                crate::api::API_VERSION
            ),
        ));
        return;
    }
    if !KINDS.contains(&kind.as_str()) {
        out.push(doc.finding(
            "kind",
            Error,
            format!(
                "kind {kind:?} is not a weir kind (one of {})",
                KINDS.join(", ")
            ),
        ));
        return;
    }
    // Rules run even when the schema check failed, but say nothing more about a line the schema
    // already flagged: one clear message per mistake.
    let mut schema = Vec::new();
    schema_check(doc, &kind, &mut schema);
    let flagged: BTreeSet<u64> = schema.iter().map(|f| f.line).collect();
    out.append(&mut schema);
    let mut rules = Vec::new();
    check_rules(doc, &kind, defined, !flagged.is_empty(), &mut rules);
    out.extend(rules.into_iter().filter(|f| !flagged.contains(&f.line)));
}

/// Checks the object as weir's types read it. `schema_failed`: the schema check already reported
/// the shape problems, so a type error would only repeat them less precisely.
fn check_rules(
    doc: &Doc,
    kind: &str,
    defined: &Defined,
    schema_failed: bool,
    out: &mut Vec<Finding>,
) {
    use Severity::Error;
    let json = doc.root.to_json();
    let label = format!("{kind} {}", doc.name());
    let mut type_errors = Vec::new();
    match kind {
        "Rollout" => {
            if let Some(ro) = typed::<Rollout>(doc, &json, &label, &mut type_errors) {
                check_rollout(doc, &ro, defined, out);
            }
        }
        "AnalysisTemplate" | "ClusterAnalysisTemplate" | "AnalysisRun" => {
            let spec = json.get("spec").cloned().unwrap_or_default();
            if let Some(spec) =
                typed_value::<AnalysisTemplateSpec>(doc, spec, &label, &mut type_errors)
            {
                check_template(doc, &spec, out);
            }
        }
        "GitSync" => {
            if let Some(gs) = typed::<GitSync>(doc, &json, &label, &mut type_errors) {
                for (field, value) in [
                    ("interval", &gs.spec.interval),
                    ("timeout", &gs.spec.timeout),
                ] {
                    if let Some(d) = value
                        && let Err(e) = d.to_duration()
                    {
                        out.push(doc.finding(
                            &format!("spec.{field}"),
                            Error,
                            format!("spec.{field}: {e}"),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if !schema_failed {
        out.append(&mut type_errors);
    }
}

#[cfg(feature = "emulator")]
fn schema_check(doc: &Doc, kind: &str, out: &mut Vec<Finding>) {
    use crate::emulator::validation::validate_object;
    let Some(schema) = crate::api::crds::all().into_iter().find_map(|crd| {
        (crd.spec.names.kind == kind)
            .then(|| {
                crd.spec
                    .versions
                    .iter()
                    .find(|v| v.name == crate::api::VERSION)
                    .and_then(|v| v.schema.as_ref())
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| serde_json::to_value(s).ok())
            })
            .flatten()
    }) else {
        return;
    };
    let object = doc.root.to_json();
    for e in validate_object(&schema, &mut object.clone())
        .err()
        .unwrap_or_default()
    {
        out.push(doc.finding(&e.field, Severity::Error, e.to_string()));
    }
    // The validation lists pruned fields only when the object is otherwise valid; a typo is worth
    // reporting beside other mistakes, so unknown fields are found by a walk of their own.
    let mut unknown = Vec::new();
    unknown_fields(&schema, &object, "", &mut unknown);
    for field in unknown {
        out.push(doc.finding(
            &field,
            Severity::Error,
            format!("unknown field \"{field}\""),
        ));
    }
}

/// Fields of `value` that `schema` does not declare (where it does not keep unknown fields), as
/// paths like `spec.strategy.canary.stableSerivce`.
pub fn unknown_fields(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let embedded = path.is_empty()
                    || schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(p) = properties.and_then(|p| p.get(key)) {
                    unknown_fields(p, child, &child_path, out);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    unknown_fields(a, child, &child_path, out);
                } else if !preserve
                    && additional != Some(&Value::Bool(true))
                    && properties.is_some()
                {
                    out.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(not(feature = "emulator"))]
fn schema_check(_doc: &Doc, _kind: &str, _out: &mut Vec<Finding>) {}

fn typed<T: DeserializeOwned>(
    doc: &Doc,
    json: &serde_json::Value,
    label: &str,
    out: &mut Vec<Finding>,
) -> Option<T> {
    typed_value(doc, json.clone(), label, out)
}

fn typed_value<T: DeserializeOwned>(
    doc: &Doc,
    json: serde_json::Value,
    label: &str,
    out: &mut Vec<Finding>,
) -> Option<T> {
    match serde_json::from_value(json) {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(doc.finding("spec", Severity::Error, format!("{label}: {e}")));
            None
        }
    }
}

fn check_template(doc: &Doc, spec: &AnalysisTemplateSpec, out: &mut Vec<Finding>) {
    let declared: BTreeSet<&str> = spec.args.iter().map(|a| a.name.as_str()).collect();
    // Conditions may use arguments, whose values are known only when a Rollout runs the template;
    // a number stands in for those without a default, so the expression's syntax can be checked.
    let stand_ins: BTreeMap<String, String> = spec
        .args
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.value.clone().unwrap_or_else(|| "0".into()),
            )
        })
        .collect();
    for (i, metric) in spec.metrics.iter().enumerate() {
        let base = format!("spec.metrics[{i}]");
        let mut checked = metric.clone();
        checked.success_condition = substitute(&checked, &stand_ins).success_condition;
        checked.failure_condition = substitute(&checked, &stand_ins).failure_condition;
        if let Err(e) = assessment::validate(&checked) {
            let field = match &e {
                assessment::MetricSpecError::Duration { field, .. }
                | assessment::MetricSpecError::Condition { field, .. } => *field,
            };
            out.push(doc.finding(&format!("{base}.{field}"), Severity::Error, e.to_string()));
        }
        if let MetricProvider::Prometheus(p) = &metric.provider
            && let Err(e) = p.timeout()
        {
            out.push(doc.finding(
                &format!("{base}.provider.prometheus.timeout"),
                Severity::Error,
                format!("metric {}: timeout: {e}", metric.name),
            ));
        }
        for arg in referenced_args(metric) {
            if !declared.contains(arg.as_str()) {
                out.push(doc.finding(
                    &base,
                    Severity::Error,
                    format!(
                        "metric {} refers to {{{{args.{arg}}}}}, which spec.args does not declare",
                        metric.name
                    ),
                ));
            }
        }
    }
    for (i, d) in spec.dry_run.iter().enumerate() {
        if !spec.metrics.iter().any(|m| m.name == d.metric_name) {
            out.push(doc.finding(
                &format!("spec.dryRun[{i}].metricName"),
                Severity::Warning,
                format!(
                    "dryRun names metric {:?}, which the template does not define",
                    d.metric_name
                ),
            ));
        }
    }
}

fn check_rollout(doc: &Doc, ro: &Rollout, defined: &Defined, out: &mut Vec<Finding>) {
    use Severity::{Error, Warning};
    let spec = &ro.spec;
    if let Some(labels) = &spec.selector.match_labels {
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for (k, v) in labels {
            if template_labels.get(k) != Some(v) {
                out.push(doc.finding(
                    "spec.selector.matchLabels",
                    Error,
                    format!("spec.selector selects {k}={v}, which spec.template.metadata.labels does not carry"),
                ));
            }
        }
    }
    let service = |field: &str, name: &Option<String>, out: &mut Vec<Finding>| {
        if let Some(name) = name
            && !defined.services.contains(name)
        {
            out.push(doc.finding(
                field,
                Warning,
                format!("Service {name:?} is not defined in the linted files"),
            ));
        }
    };
    let mut analyses: Vec<(String, &RolloutAnalysis)> = Vec::new();
    match &spec.strategy {
        RolloutStrategy::Canary(c) => {
            service("spec.strategy.canary.stableService", &c.stable_service, out);
            service("spec.strategy.canary.canaryService", &c.canary_service, out);
            if let Some(routing) = &c.traffic_routing {
                if c.stable_service.is_none() || c.canary_service.is_none() {
                    out.push(doc.finding(
                        "spec.strategy.canary.trafficRouting",
                        Error,
                        "trafficRouting needs both stableService and canaryService",
                    ));
                }
                if c.stable_service.is_some() && c.stable_service == c.canary_service {
                    out.push(doc.finding(
                        "spec.strategy.canary.canaryService",
                        Error,
                        "stableService and canaryService must differ",
                    ));
                }
                for (i, r) in routing
                    .gateway_api
                    .iter()
                    .flat_map(|g| g.http_routes.iter())
                    .enumerate()
                {
                    if !defined.http_routes.contains(&r.name) {
                        out.push(doc.finding(
                            &format!("spec.strategy.canary.trafficRouting.gatewayAPI.httpRoutes[{i}].name"),
                            Warning,
                            format!("HTTPRoute {:?} is not defined in the linted files", r.name),
                        ));
                    }
                }
                for (i, v) in routing
                    .istio
                    .iter()
                    .flat_map(|g| g.virtual_services.iter())
                    .enumerate()
                {
                    if !defined.virtual_services.contains(&v.name) {
                        out.push(doc.finding(
                            &format!("spec.strategy.canary.trafficRouting.istio.virtualServices[{i}].name"),
                            Warning,
                            format!("VirtualService {:?} is not defined in the linted files", v.name),
                        ));
                    }
                }
            }
            for (i, step) in c.steps.iter().enumerate() {
                match step {
                    CanaryStep::Pause(p) => {
                        if let Some(d) = &p.duration
                            && let Err(e) = d.to_duration()
                        {
                            out.push(doc.finding(
                                &format!("spec.strategy.canary.steps[{i}].pause.duration"),
                                Error,
                                format!("step {}: pause duration: {e}", i + 1),
                            ));
                        }
                    }
                    CanaryStep::Analysis(a) => {
                        analyses.push((format!("spec.strategy.canary.steps[{i}].analysis"), a));
                    }
                    _ => {}
                }
            }
            if let Some(bg) = &c.analysis {
                analyses.push(("spec.strategy.canary.analysis".into(), &bg.analysis));
            }
        }
        RolloutStrategy::BlueGreen(b) => {
            service(
                "spec.strategy.blueGreen.activeService",
                &Some(b.active_service.clone()),
                out,
            );
            service(
                "spec.strategy.blueGreen.previewService",
                &b.preview_service,
                out,
            );
            if let Some(a) = &b.pre_promotion_analysis {
                analyses.push(("spec.strategy.blueGreen.prePromotionAnalysis".into(), a));
            }
            if let Some(a) = &b.post_promotion_analysis {
                analyses.push(("spec.strategy.blueGreen.postPromotionAnalysis".into(), a));
            }
        }
    }
    for (path, analysis) in analyses {
        check_analysis(doc, &path, analysis, defined, out);
    }
}

fn check_analysis(
    doc: &Doc,
    path: &str,
    analysis: &RolloutAnalysis,
    defined: &Defined,
    out: &mut Vec<Finding>,
) {
    let mut templates = Vec::new();
    let mut usable = true;
    for (i, t) in analysis.templates.iter().enumerate() {
        let (set, kind) = if t.cluster_scope {
            (&defined.cluster_templates, "ClusterAnalysisTemplate")
        } else {
            (&defined.templates, "AnalysisTemplate")
        };
        match set.get(&t.template_name) {
            Some(Some(spec)) => templates.push(spec),
            Some(None) => usable = false,
            None => out.push(doc.finding(
                &format!("{path}.templates[{i}].templateName"),
                Severity::Error,
                format!(
                    "{kind} {:?} is not defined in the linted files; the Rollout would wait at this analysis",
                    t.template_name
                ),
            )),
        }
    }
    let supplied: BTreeSet<&str> = analysis.args.iter().map(|a| a.name.as_str()).collect();
    let mut declared = BTreeSet::new();
    for spec in &templates {
        for arg in &spec.args {
            declared.insert(arg.name.as_str());
            if arg.value.is_none()
                && arg.value_from.is_none()
                && !supplied.contains(arg.name.as_str())
            {
                out.push(doc.finding(
                    path,
                    Severity::Error,
                    format!(
                        "argument {:?} of the analysis templates is not supplied: add it to args",
                        arg.name
                    ),
                ));
            }
        }
    }
    if usable && templates.len() == analysis.templates.len() {
        for (i, a) in analysis.args.iter().enumerate() {
            if !declared.contains(a.name.as_str()) {
                out.push(doc.finding(
                    &format!("{path}.args[{i}].name"),
                    Severity::Warning,
                    format!(
                        "argument {:?} is not declared by any of the templates",
                        a.name
                    ),
                ));
            }
            if a.value.is_none() && a.value_from.is_none() {
                out.push(doc.finding(
                    &format!("{path}.args[{i}]"),
                    Severity::Error,
                    format!("argument {:?} needs value or valueFrom", a.name),
                ));
            }
        }
    }
}

/// Runs `lint`.
pub fn run(args: LintArgs) -> Result<u8, PluginError> {
    let files = collect_files(&args.files)?;
    let report = lint_files(&files)?;
    let mut text = String::new();
    for f in &report.findings {
        text.push_str(&f.to_string());
        text.push('\n');
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = report.findings.len() - errors;
    text.push_str(&format!(
        "{} files, {} weir objects: {errors} errors, {warnings} warnings\n",
        report.files, report.objects
    ));
    print(&text)?;
    Ok(if report.has_errors() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}
