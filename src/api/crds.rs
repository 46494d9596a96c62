//! The CustomResourceDefinitions of weir's kinds, as objects and as YAML (`weir crds`).

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::alert_provider::AlertProvider;
use super::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use super::gitsync::GitSync;
use super::rollout::Rollout;

/// Why the CRDs could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialized to YAML.
    #[error("cannot serialize CRD {name} to YAML")]
    Serialize {
        /// Name of the CRD.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// A CRD file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A CRD rendered as a YAML file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    /// File name, `<group>_<plural>.yaml` (e.g. `weir.io_rollouts.yaml`).
    pub file_name: String,
    /// The YAML document.
    pub yaml: String,
}

/// Every CRD weir defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Rollout::crd(),
        AnalysisTemplate::crd(),
        ClusterAnalysisTemplate::crd(),
        AnalysisRun::crd(),
        GitSync::crd(),
        AlertProvider::crd(),
    ]
}

/// The file name a CRD is stored under: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Every CRD as one YAML file each, in the order of [`all`].
pub fn files() -> Result<Vec<CrdFile>, CrdError> {
    all()
        .iter()
        .map(|crd| {
            Ok(CrdFile {
                file_name: file_name(crd),
                yaml: to_yaml_document(crd)?,
            })
        })
        .collect()
}

/// Every CRD as one multi-document YAML stream, in the order of [`all`].
pub fn to_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml_document(&crd)?);
    }
    Ok(out)
}

/// Writes [`files`] into `dir` (which must exist) and returns the paths written.
pub fn write_dir(dir: &Path) -> Result<Vec<PathBuf>, CrdError> {
    let mut written = Vec::new();
    for file in files()? {
        let path = dir.join(&file.file_name);
        std::fs::write(&path, &file.yaml).map_err(|source| CrdError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn to_yaml_document(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    serde_saphyr::to_string(crd).map_err(|source| CrdError::Serialize {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let version = crd.spec.versions.first().unwrap();
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        serde_json::to_value(schema).unwrap()
    }

    /// Collects violations of Kubernetes' structural-schema rules (and of the list-map rules
    /// server-side apply depends on) under `path`.
    fn structural_violations(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
        let Some(object) = node.as_object() else {
            out.push(format!("{path}: schema is not an object"));
            return;
        };
        if object.contains_key("$ref") {
            out.push(format!("{path}: $ref"));
        }
        if object.contains_key("definitions") || object.contains_key("$defs") {
            out.push(format!("{path}: definitions"));
        }
        if object.contains_key("allOf") || object.contains_key("not") {
            out.push(format!("{path}: allOf/not"));
        }
        let preserves_unknown =
            object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let int_or_string = object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));

        if in_junctor {
            for forbidden in [
                "type",
                "properties",
                "items",
                "description",
                "default",
                "additionalProperties",
                "nullable",
            ] {
                if object.contains_key(forbidden) {
                    out.push(format!("{path}: `{forbidden}` inside oneOf/anyOf"));
                }
            }
            return;
        }

        match object.get("type").and_then(Value::as_str) {
            None if !preserves_unknown && !int_or_string => out.push(format!("{path}: no type")),
            Some(_) if int_or_string => out.push(format!("{path}: int-or-string with a type")),
            _ => {}
        }
        if object.contains_key("properties") && object.get("type") != Some(&Value::from("object")) {
            out.push(format!("{path}: properties on a non-object"));
        }
        if let Some(Value::Array(variants)) = object.get("anyOf") {
            // Only int-or-string may use anyOf, and only with bare types.
            if !int_or_string {
                out.push(format!("{path}: anyOf outside int-or-string"));
            }
            for variant in variants {
                let keys: Vec<_> = variant
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                if keys != ["type"] {
                    out.push(format!("{path}: anyOf variant {variant}"));
                }
            }
        }
        if let Some(Value::Array(variants)) = object.get("oneOf") {
            let properties = object.get("properties").and_then(Value::as_object);
            for (index, variant) in variants.iter().enumerate() {
                structural_violations(variant, &format!("{path}.oneOf[{index}]"), true, out);
                // Every field a variant requires must be declared outside it.
                for required in variant
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let declared = required
                        .as_str()
                        .is_some_and(|name| properties.is_some_and(|p| p.contains_key(name)));
                    if !declared {
                        out.push(format!(
                            "{path}.oneOf[{index}]: requires undeclared {required}"
                        ));
                    }
                }
            }
        }
        if object.get("x-kubernetes-list-type") == Some(&Value::from("map")) {
            let item_required: Vec<&Value> = node
                .pointer("/items/required")
                .and_then(Value::as_array)
                .map(|r| r.iter().collect())
                .unwrap_or_default();
            let keys = object
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array);
            match keys {
                Some(keys) if !keys.is_empty() => {
                    for key in keys {
                        if !item_required.contains(&key) {
                            out.push(format!(
                                "{path}: list-map key {key} is not required in items"
                            ));
                        }
                    }
                }
                _ => out.push(format!("{path}: list-type map without keys")),
            }
        }

        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, property) in properties {
                structural_violations(property, &format!("{path}.{name}"), false, out);
            }
        }
        if let Some(items) = object.get("items") {
            structural_violations(items, &format!("{path}[]"), false, out);
        }
        if let Some(additional @ Value::Object(_)) = object.get("additionalProperties") {
            structural_violations(additional, &format!("{path}{{}}"), false, out);
        }
    }

    #[test]
    fn every_schema_is_structural() {
        for crd in all() {
            let mut violations = Vec::new();
            structural_violations(&schema_of(&crd), "", false, &mut violations);
            assert!(
                violations.is_empty(),
                "{} is not structural:\n{}",
                crd.metadata.name.unwrap_or_default(),
                violations.join("\n")
            );
        }
    }

    #[test]
    fn crds_have_the_names_and_subresources_kubectl_relies_on() {
        struct Expected {
            name: &'static str,
            scope: &'static str,
            short_name: &'static str,
            scale: bool,
        }
        let expected = [
            Expected {
                name: "rollouts.weir.io",
                scope: "Namespaced",
                short_name: "ro",
                scale: true,
            },
            Expected {
                name: "analysistemplates.weir.io",
                scope: "Namespaced",
                short_name: "at",
                scale: false,
            },
            Expected {
                name: "clusteranalysistemplates.weir.io",
                scope: "Cluster",
                short_name: "cat",
                scale: false,
            },
            Expected {
                name: "analysisruns.weir.io",
                scope: "Namespaced",
                short_name: "ar",
                scale: false,
            },
            Expected {
                name: "gitsyncs.weir.io",
                scope: "Namespaced",
                short_name: "gs",
                scale: false,
            },
            Expected {
                name: "alertproviders.weir.io",
                scope: "Namespaced",
                short_name: "ap",
                scale: false,
            },
        ];
        let crds = all();
        assert_eq!(crds.len(), expected.len());
        for (crd, expected) in crds.iter().zip(expected) {
            assert_eq!(crd.metadata.name.as_deref(), Some(expected.name));
            assert_eq!(crd.spec.group, "weir.io");
            assert_eq!(crd.spec.scope, expected.scope, "{}", expected.name);
            assert_eq!(
                crd.spec.names.short_names,
                Some(vec![expected.short_name.to_owned()])
            );
            assert_eq!(crd.spec.names.categories, Some(vec!["weir".to_owned()]));
            let version = crd.spec.versions.first().unwrap();
            assert_eq!(version.name, "v1alpha1");
            assert!(version.served && version.storage);
            let subresources = version.subresources.as_ref().unwrap();
            assert!(
                subresources.status.is_some(),
                "{} has no status subresource",
                expected.name
            );
            assert_eq!(
                subresources.scale.is_some(),
                expected.scale,
                "{}",
                expected.name
            );
        }
    }

    #[test]
    fn rollout_scale_subresource_and_columns_point_at_existing_fields() {
        let crd = Rollout::crd();
        let version = crd.spec.versions.first().unwrap();
        let scale = version
            .subresources
            .as_ref()
            .unwrap()
            .scale
            .as_ref()
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );

        let schema = schema_of(&crd);
        for pointer in [
            "/properties/spec/properties/replicas",
            "/properties/status/properties/replicas",
            "/properties/status/properties/readyReplicas",
            "/properties/status/properties/availableReplicas",
            "/properties/status/properties/updatedReplicas",
            "/properties/status/properties/selector",
            "/properties/status/properties/phase",
            "/properties/status/properties/currentStepIndex",
            "/properties/status/properties/weights/properties/canary",
        ] {
            assert!(schema.pointer(pointer).is_some(), "missing {pointer}");
        }
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Phase", ".status.phase"),
                ("Step", ".status.currentStepIndex"),
                ("Weight", ".status.weights.canary"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn one_of_constraints_are_in_the_schema() {
        let rollout = schema_of(&Rollout::crd());
        let analysis = schema_of(&AnalysisTemplate::crd());
        let gitsync = schema_of(&GitSync::crd());
        let alert = schema_of(&AlertProvider::crd());
        let steps = "/properties/spec/properties/strategy/properties/canary/properties/steps/items";
        let cases: [(&Value, String, &[&str]); 7] = [
            (&rollout, "/properties/spec/properties/strategy".to_owned(), &["canary", "blueGreen"]),
            (&rollout, steps.to_owned(), &["setWeight", "pause", "analysis", "setCanaryScale"]),
            (
                &rollout,
                format!("{steps}/properties/setCanaryScale"),
                &["replicas", "weight", "matchTrafficWeight"],
            ),
            (
                &analysis,
                "/properties/spec/properties/metrics/items/properties/provider".to_owned(),
                &["prometheus", "web"],
            ),
            (
                &analysis,
                "/properties/spec/properties/metrics/items/properties/provider/properties/prometheus/properties/authentication"
                    .to_owned(),
                &["bearer", "basic"],
            ),
            (&gitsync, "/properties/spec/properties/ref".to_owned(), &["branch", "tag", "commit"]),
            (&alert, "/properties/spec".to_owned(), &["address", "secretRef"]),
        ];
        for (schema, pointer, fields) in cases {
            let node = schema
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("missing {pointer}"));
            let one_of: Vec<Value> = fields
                .iter()
                .map(|f| serde_json::json!({ "required": [f] }))
                .collect();
            assert_eq!(node.get("oneOf"), Some(&Value::Array(one_of)), "{pointer}");
        }
    }

    #[test]
    fn enums_and_bounds_are_in_the_schema() {
        let rollout = schema_of(&Rollout::crd());
        let run = schema_of(&AnalysisRun::crd());
        let alert = schema_of(&AlertProvider::crd());
        let web = "/properties/spec/properties/metrics/items/properties/provider/properties/web";
        let enum_cases: [(&Value, String, &[&str]); 4] = [
            (
                &rollout,
                "/properties/status/properties/phase".to_owned(),
                &["Healthy", "Progressing", "Paused", "Degraded"],
            ),
            (
                &run,
                "/properties/status/properties/phase".to_owned(),
                &[
                    "Pending",
                    "Running",
                    "Successful",
                    "Failed",
                    "Error",
                    "Inconclusive",
                ],
            ),
            (
                &alert,
                "/properties/spec/properties/type".to_owned(),
                &["slack", "msteams", "discord", "googlechat", "webhook"],
            ),
            (&run, format!("{web}/properties/method"), &["GET", "POST"]),
        ];
        for (schema, pointer, values) in enum_cases {
            let node = schema
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("missing {pointer}"));
            let actual: Vec<&str> = node["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(actual, values, "{pointer}");
        }

        let steps = "/properties/spec/properties/strategy/properties/canary/properties/steps/items/properties";
        let bound_cases = [
            (
                &rollout,
                format!("{steps}/setWeight"),
                Some(0.0),
                Some(100.0),
            ),
            (
                &rollout,
                "/properties/spec/properties/replicas".to_owned(),
                Some(0.0),
                None,
            ),
            (
                &run,
                "/properties/spec/properties/metrics/items/properties/failureLimit".to_owned(),
                Some(0.0),
                None,
            ),
        ];
        for (schema, pointer, minimum, maximum) in bound_cases {
            let node = schema
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("missing {pointer}"));
            assert_eq!(
                node.get("minimum").and_then(Value::as_f64),
                minimum,
                "{pointer}"
            );
            assert_eq!(
                node.get("maximum").and_then(Value::as_f64),
                maximum,
                "{pointer}"
            );
        }
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let rollout = schema_of(&Rollout::crd());
        let run = schema_of(&AnalysisRun::crd());
        let cases = [
            (&rollout, "/properties/status/properties/conditions", "type"),
            (
                &rollout,
                "/properties/status/properties/pauseConditions",
                "reason",
            ),
            (&rollout, "/properties/spec/properties/alerts", "name"),
            (&run, "/properties/spec/properties/metrics", "name"),
            (&run, "/properties/spec/properties/args", "name"),
            (&run, "/properties/status/properties/metricResults", "name"),
        ];
        for (schema, pointer, key) in cases {
            let node = schema
                .pointer(pointer)
                .unwrap_or_else(|| panic!("missing {pointer}"));
            assert_eq!(node["x-kubernetes-list-type"], "map", "{pointer}");
            assert_eq!(
                node["x-kubernetes-list-map-keys"],
                serde_json::json!([key]),
                "{pointer}"
            );
        }
    }

    #[test]
    fn yaml_round_trips_to_the_same_crds() {
        let files = files().unwrap();
        for (file, crd) in files.iter().zip(all()) {
            let parsed: CustomResourceDefinition = serde_saphyr::from_str(&file.yaml).unwrap();
            assert_eq!(parsed, crd, "{}", file.file_name);
        }
        let stream = to_yaml().unwrap();
        let parsed: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&stream).unwrap();
        assert_eq!(parsed, all());
    }
}
