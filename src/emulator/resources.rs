//! The kinds the emulator serves: a built-in table plus whatever CustomResourceDefinitions register.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::merge::MergeSchema;
use super::validation::{FieldError, StructuralSchema};

/// A column `kubectl get` prints, from a CRD's `additionalPrinterColumns` or the built-in table.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Header text.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// A simple JSONPath such as `.status.phase`.
    pub json_path: String,
    /// Shown only with `-o wide` when greater than 0.
    pub priority: i64,
    /// Column description for the Table header.
    pub description: String,
}

/// Where a scale subresource reads and writes replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    /// e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// e.g. `.status.replicas`.
    pub status_replicas: String,
    /// e.g. `.status.selector`, when the kind has one.
    pub label_selector: Option<String>,
}

/// One served group/version/resource.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Kind of the list, `<Kind>List`.
    pub list_kind: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories such as `all`.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then the main resource ignores status writes).
    pub status_subresource: bool,
    /// Scale subresource paths.
    pub scale: Option<ScalePaths>,
    /// The structural schema for custom resources.
    pub schema: Option<Value>,
    /// `schema`, read once: every write of a custom resource is validated against it, and reading
    /// it per write was a quarter of the emulator's CPU while 1,000 Rollouts stepped.
    pub validator: Option<Result<StructuralSchema, FieldError>>,
    /// Printer columns after NAME.
    pub printer_columns: Vec<PrinterColumn>,
    /// True for built-in kinds, which accept strategic merge patch.
    pub builtin: bool,
    /// List and map merge rules for server-side apply and strategic merge.
    pub merge: MergeSchema,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of the storage collection: one per group and plural, shared by all versions.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// Identifies a collection of objects independent of the version they are served at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

/// The table of served resources, keyed by group, then version, then plural.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<ResourceType>>>>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    columns: &'static [(&'static str, &'static str, &'static str)],
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        short: &["ns"],
        status: true,
        columns: &[("Status", "string", ".status.phase")],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        short: &["svc"],
        status: true,
        columns: &[
            ("Type", "string", ".spec.type"),
            ("Cluster-IP", "string", ".spec.clusterIP"),
        ],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        short: &["cm"],
        status: false,
        columns: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        short: &[],
        status: false,
        columns: &[("Type", "string", ".type")],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short: &["ev"],
        status: false,
        columns: &[
            ("Reason", "string", ".reason"),
            ("Object", "string", ".involvedObject.name"),
            ("Message", "string", ".message"),
        ],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        short: &["po"],
        status: true,
        columns: &[("Status", "string", ".status.phase")],
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short: &["ev"],
        status: false,
        columns: &[("Reason", "string", ".reason"), ("Note", "string", ".note")],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        namespaced: true,
        short: &["rs"],
        status: true,
        columns: &[
            ("Desired", "integer", ".spec.replicas"),
            ("Current", "integer", ".status.replicas"),
            ("Ready", "integer", ".status.readyReplicas"),
        ],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        short: &["deploy"],
        status: true,
        columns: &[
            ("Ready", "integer", ".status.readyReplicas"),
            ("Up-to-date", "integer", ".status.updatedReplicas"),
            ("Available", "integer", ".status.availableReplicas"),
        ],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        short: &[],
        status: false,
        columns: &[("Holder", "string", ".spec.holderIdentity")],
    },
    // What installing weir's Helm chart creates besides a Deployment and a Service.
    Builtin {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        short: &["sa"],
        status: false,
        columns: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        short: &[],
        status: false,
        columns: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        short: &[],
        status: false,
        columns: &[("Role", "string", ".roleRef.name")],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        short: &[],
        status: false,
        columns: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        short: &[],
        status: false,
        columns: &[("Role", "string", ".roleRef.name")],
    },
    Builtin {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
        short: &["pdb"],
        status: true,
        columns: &[
            ("Min-Available", "string", ".spec.minAvailable"),
            ("Max-Unavailable", "string", ".spec.maxUnavailable"),
        ],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        short: &["crd", "crds"],
        status: true,
        columns: &[],
    },
];

impl Registry {
    /// The registry holding the built-in kinds weir needs.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::default();
        for b in BUILTINS {
            let scale = matches!(b.kind, "ReplicaSet" | "Deployment").then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".status.selector".into()),
            });
            registry.insert(ResourceType {
                group: b.group.into(),
                version: b.version.into(),
                kind: b.kind.into(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.into(),
                singular: b.kind.to_ascii_lowercase(),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: if matches!(b.kind, "Service" | "Pod" | "ReplicaSet" | "Deployment") {
                    vec!["all".into()]
                } else {
                    vec![]
                },
                status_subresource: b.status,
                scale,
                schema: None,
                validator: None,
                printer_columns: b
                    .columns
                    .iter()
                    .map(|(name, t, path)| PrinterColumn {
                        name: name.to_string(),
                        type_: t.to_string(),
                        json_path: path.to_string(),
                        priority: 0,
                        description: String::new(),
                    })
                    .collect(),
                builtin: true,
                merge: MergeSchema::for_builtin(b.group, b.kind),
            });
        }
        registry
    }

    /// Adds or replaces one group/version/resource.
    pub fn insert(&mut self, rt: ResourceType) {
        self.groups
            .entry(rt.group.clone())
            .or_default()
            .entry(rt.version.clone())
            .or_default()
            .insert(rt.plural.clone(), Arc::new(rt));
    }

    /// Removes every version of a custom resource.
    pub fn remove(&mut self, group: &str, plural: &str) {
        if let Some(versions) = self.groups.get_mut(group) {
            for resources in versions.values_mut() {
                resources.remove(plural);
            }
            versions.retain(|_, r| !r.is_empty());
            if versions.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Looks a resource up by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.groups.get(group)?.get(version)?.get(plural).cloned()
    }

    /// Every served group with its versions, sorted; core ("") included.
    pub fn groups(
        &self,
    ) -> impl Iterator<
        Item = (
            &String,
            &BTreeMap<String, BTreeMap<String, Arc<ResourceType>>>,
        ),
    > {
        self.groups.iter()
    }

    /// All resources served at one group/version.
    pub fn resources(
        &self,
        group: &str,
        version: &str,
    ) -> Option<&BTreeMap<String, Arc<ResourceType>>> {
        self.groups.get(group)?.get(version)
    }

    /// Any served version of a collection (used where the version does not matter, such as GC).
    pub fn any_version(&self, key: &ResourceKey) -> Option<Arc<ResourceType>> {
        self.groups
            .get(&key.group)?
            .values()
            .find_map(|r| r.get(&key.plural).cloned())
    }

    /// The preferred (first sorted by Kubernetes version priority) version of a group.
    pub fn preferred_version(&self, group: &str) -> Option<String> {
        let versions = self.groups.get(group)?;
        let mut names: Vec<&String> = versions.keys().collect();
        names.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        names.first().map(|s| s.to_string())
    }
}

/// Orders versions as Kubernetes does: GA over beta over alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, num.parse().unwrap_or(0))
}

/// Reads a CustomResourceDefinition object into the resource types it serves.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = str_at(spec, &["group"]).ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = str_at(names, &["plural"]).ok_or("spec.names.plural: Required value")?;
    let kind = str_at(names, &["kind"]).ok_or("spec.names.kind: Required value")?;
    let expected_name = format!("{plural}.{group}");
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if name != expected_name {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let scope = str_at(spec, &["scope"]).ok_or("spec.scope: Required value")?;
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let vname =
            str_at(version, &["name"]).ok_or(format!("spec.versions[{i}].name: Required value"))?;
        if version.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let schema = version
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .ok_or(format!(
                "spec.versions[{i}].schema.openAPIV3Schema: Required value"
            ))?;
        let sub = version.get("subresources");
        let scale = sub.and_then(|s| s.get("scale")).map(|s| ScalePaths {
            spec_replicas: str_at(s, &["specReplicasPath"])
                .unwrap_or(".spec.replicas")
                .into(),
            status_replicas: str_at(s, &["statusReplicasPath"])
                .unwrap_or(".status.replicas")
                .into(),
            label_selector: str_at(s, &["labelSelectorPath"]).map(String::from),
        });
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: str_at(c, &["name"])?.into(),
                            type_: str_at(c, &["type"]).unwrap_or("string").into(),
                            json_path: str_at(c, &["jsonPath"])?.into(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            description: str_at(c, &["description"]).unwrap_or_default().into(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceType {
            group: group.into(),
            version: vname.into(),
            kind: kind.into(),
            list_kind: str_at(names, &["listKind"])
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            plural: plural.into(),
            singular: str_at(names, &["singular"])
                .map(String::from)
                .unwrap_or_else(|| kind.to_ascii_lowercase()),
            namespaced,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            status_subresource: sub.and_then(|s| s.get("status")).is_some(),
            scale,
            merge: MergeSchema::from_openapi_v3(&schema),
            validator: Some(StructuralSchema::new(&schema)),
            schema: Some(schema),
            printer_columns,
            builtin: false,
        });
    }
    Ok(out)
}

/// The string at a path of object keys.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2", "foo"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_name_must_match_plural_and_group() {
        let crd = serde_json::json!({
            "metadata": {"name": "wrong"},
            "spec": {"group": "x.io", "names": {"plural": "things", "kind": "Thing"}, "scope": "Namespaced",
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        assert!(from_crd(&crd).unwrap_err().contains("metadata.name"));
    }
}
