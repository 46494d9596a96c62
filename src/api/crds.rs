//! The CustomResourceDefinitions of weir's kinds, as objects and as YAML (`weir crds`).

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::Value;

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
///
/// These are the derived CRDs with two adjustments, both on the Rollout's embedded pod template:
/// its descriptions are dropped, because with them the CRD is larger than the 256 KiB
/// `last-applied-configuration` annotation that a plain `kubectl apply` writes (`kubectl explain
/// pod.spec` documents those fields anyway); and its containers and volumes are merged by name
/// under server-side apply, as they are in a Deployment.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Rollout::crd(),
        AnalysisTemplate::crd(),
        ClusterAnalysisTemplate::crd(),
        AnalysisRun::crd(),
        GitSync::crd(),
        AlertProvider::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let schema = version
                .schema
                .as_mut()
                .and_then(|validation| validation.open_api_v3_schema.as_mut());
            if let Some(schema) = schema {
                visit_schemas(schema, &mut unwrap_description);
                if let Some(template) = property_mut(schema, &["spec", "template"]) {
                    visit_schemas(template, &mut |node| node.description = None);
                    if let Some(pod) = property_mut(template, &["spec"]) {
                        for list in ["containers", "initContainers", "volumes"] {
                            if let Some(list) = property_mut(pod, &[list]) {
                                list.x_kubernetes_list_type = Some("map".to_owned());
                                list.x_kubernetes_list_map_keys = Some(vec!["name".to_owned()]);
                            }
                        }
                    }
                }
            }
        }
    }
    crds
}

/// Calls `f` on `schema` and every schema nested in it.
fn visit_schemas(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    let maps = [
        schema.properties.as_mut(),
        schema.pattern_properties.as_mut(),
        schema.definitions.as_mut(),
    ];
    for map in maps.into_iter().flatten() {
        for nested in map.values_mut() {
            visit_schemas(nested, f);
        }
    }
    let lists = [
        schema.one_of.as_mut(),
        schema.any_of.as_mut(),
        schema.all_of.as_mut(),
    ];
    for list in lists.into_iter().flatten() {
        for nested in list {
            visit_schemas(nested, f);
        }
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(items)) => visit_schemas(items, f),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            for nested in items {
                visit_schemas(nested, f);
            }
        }
        None => {}
    }
    for nested in [
        schema.additional_properties.as_mut(),
        schema.additional_items.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let JSONSchemaPropsOrBool::Schema(nested) = nested {
            visit_schemas(nested, f);
        }
    }
    if let Some(not) = schema.not.as_mut() {
        visit_schemas(not, f);
    }
}

/// Joins the lines of a description that come from wrapped doc comments, keeping paragraph
/// breaks, so `kubectl explain` can wrap the text itself.
fn unwrap_description(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut()
        && description.contains('\n')
    {
        *description = description
            .split("\n\n")
            .map(|paragraph| {
                paragraph
                    .split('\n')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

/// The schema of a nested property, following `path` through `properties`.
fn property_mut<'a>(
    schema: &'a mut JSONSchemaProps,
    path: &[&str],
) -> Option<&'a mut JSONSchemaProps> {
    path.iter().try_fold(schema, |node, name| {
        node.properties
            .as_mut()
            .and_then(|properties| properties.get_mut(*name))
    })
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

/// Problems that make a CRD's schemas non-structural, or that break server-side apply's
/// list merging, one line each (`path: problem`). Empty when the CRD is fine.
///
/// Checks the rules weir's CRDs could plausibly break: no `$ref`, `allOf` or `not`; a type on every
/// node except int-or-string and preserve-unknown-fields nodes; `oneOf`/`anyOf` branches that only
/// constrain (no types, properties, descriptions, defaults) and only require declared
/// properties; `anyOf` only for int-or-string; `x-kubernetes-list-type: map` with keys that the
/// items require.
pub fn structural_problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut problems = Vec::new();
    for version in &crd.spec.versions {
        let schema = version
            .schema
            .as_ref()
            .and_then(|validation| validation.open_api_v3_schema.as_ref());
        let Some(schema) = schema else {
            problems.push(format!("{}: no schema", version.name));
            continue;
        };
        match serde_json::to_value(schema) {
            Ok(schema) => structural_violations(&schema, &version.name, false, &mut problems),
            Err(error) => problems.push(format!("{}: schema is not JSON: {error}", version.name)),
        }
    }
    problems
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

fn to_yaml_document(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    serde_saphyr::to_string(crd).map_err(|source| CrdError::Serialize {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD of a kind as [`all`] generates it.
    fn generated(kind: &str) -> CustomResourceDefinition {
        all()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .unwrap()
    }

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

    #[test]
    fn every_schema_is_structural() {
        for crd in all() {
            let violations = structural_problems(&crd);
            assert!(
                violations.is_empty(),
                "{} is not structural:\n{}",
                crd.metadata.name.unwrap_or_default(),
                violations.join("\n")
            );
        }
    }

    #[test]
    fn structural_check_catches_what_the_api_server_rejects() {
        let cases = [
            (
                serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}}),
                "$ref",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"a": {}}}),
                "no type",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}},
                    "oneOf": [{"type": "object", "required": ["a"]}]}),
                "inside oneOf",
            ),
            (
                serde_json::json!({"type": "object", "oneOf": [{"required": ["b"]}]}),
                "undeclared",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}),
                "anyOf outside int-or-string",
            ),
            (
                serde_json::json!({"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}}}),
                "not required",
            ),
        ];
        for (schema, expected) in cases {
            let mut violations = Vec::new();
            structural_violations(&schema, "", false, &mut violations);
            assert!(
                violations.iter().any(|v| v.contains(expected)),
                "{schema} should violate {expected:?}, got {violations:?}"
            );
        }
    }

    #[test]
    fn rollout_crd_fits_a_client_side_kubectl_apply() {
        // `kubectl apply` without --server-side stores the object in an annotation capped at
        // 256 KiB.
        let json = serde_json::to_string(&generated("Rollout")).unwrap();
        assert!(
            json.len() < 200 * 1024,
            "Rollout CRD is {} bytes",
            json.len()
        );
    }

    #[test]
    fn pod_template_containers_and_volumes_merge_by_name() {
        let schema = schema_of(&generated("Rollout"));
        for list in ["containers", "initContainers", "volumes"] {
            let pointer =
                format!("/properties/spec/properties/template/properties/spec/properties/{list}");
            let node = schema.pointer(&pointer).unwrap();
            assert_eq!(node["x-kubernetes-list-type"], "map", "{list}");
            assert_eq!(
                node["x-kubernetes-list-map-keys"],
                serde_json::json!(["name"]),
                "{list}"
            );
        }
    }

    #[test]
    fn descriptions_are_unwrapped_but_keep_paragraphs() {
        let mut schema = JSONSchemaProps {
            description: Some("first line\nsecond line\n\nnext paragraph".to_owned()),
            ..JSONSchemaProps::default()
        };
        unwrap_description(&mut schema);
        assert_eq!(
            schema.description.as_deref(),
            Some("first line second line\n\nnext paragraph")
        );
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
        let crd = generated("Rollout");
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
        let rollout = schema_of(&generated("Rollout"));
        let analysis = schema_of(&generated("AnalysisTemplate"));
        let gitsync = schema_of(&generated("GitSync"));
        let alert = schema_of(&generated("AlertProvider"));
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
        let rollout = schema_of(&generated("Rollout"));
        let run = schema_of(&generated("AnalysisRun"));
        let alert = schema_of(&generated("AlertProvider"));
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
        let rollout = schema_of(&generated("Rollout"));
        let run = schema_of(&generated("AnalysisRun"));
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
