//! Merge metadata: how each list and map of an object merges, for built-in kinds (a table transcribed from the
//! Go type tags) and for custom resources (read from the CRD's OpenAPI v3 schema).
//!
//! Two vocabularies live side by side because the apiserver has two: strategic merge patch reads the Go tags
//! `patchStrategy`/`patchMergeKey`, server-side apply reads `+listType`/`+listMapKey`/`+mapType`/`+structType`.
//! They mostly agree but not always (container ports merge by `containerPort` in a strategic patch and by
//! `[containerPort, protocol]` in an apply; tolerations are replaced by both).

use std::collections::BTreeMap;

use serde_json::Value;

/// How a list merges, from `x-kubernetes-list-type`/`x-kubernetes-list-map-keys` in a CRD schema, or from the
/// built-in table for core kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole (the default for lists nothing is known about).
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// Items are objects identified by these key fields, merged item by item.
    Map(Vec<String>),
}

/// How a strategic merge patch treats one field: the `patchStrategy`/`patchMergeKey` tags of built-in Go types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchStrategy {
    /// `patchStrategy=merge`: lists merge instead of being replaced.
    pub merge: bool,
    /// `patchMergeKey`: the field identifying items of a merged list of objects.
    pub merge_key: Option<String>,
    /// `patchStrategy=retainKeys`: kubectl sends `$retainKeys` for this field (the server honours the
    /// directive wherever it appears, so this is informational).
    pub retain_keys: bool,
    /// `patchStrategy=replace`: the map is replaced instead of merged.
    pub replace: bool,
}

impl PatchStrategy {
    const NONE: PatchStrategy = PatchStrategy {
        merge: false,
        merge_key: None,
        retain_keys: false,
        replace: false,
    };
}

/// Whether a schema node comes from a Go type (whose struct fields exist in every zero value) or from a
/// schemaless/CRD description (where a field exists only once someone sets it). It decides which unknown keys
/// count as declared struct fields and whether a newly added object records its own presence (`"."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Typed,
    Schemaless,
}

#[derive(Debug, Clone)]
pub(super) struct ListSchema {
    list_type: ListType,
    /// Defaults of key fields, used when an item omits them (container and service port `protocol`: `TCP`).
    key_defaults: BTreeMap<String, Value>,
    item: Box<Node>,
}

/// Merge metadata of one value in an object.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// Declared fields (struct fields / `properties`).
    fields: BTreeMap<String, Node>,
    /// Schema of map entries whose keys are not declared fields (`additionalProperties`, label maps).
    elements: Option<Box<Node>>,
    origin: Origin,
    /// `x-kubernetes-map-type: atomic` / `+structType=atomic`: owned and replaced as a whole.
    map_atomic: bool,
    list: Option<ListSchema>,
    strategy: PatchStrategy,
}

static TYPED_DEFAULT: Node = Node::leaf(Origin::Typed);
static SCHEMALESS_DEFAULT: Node = Node::leaf(Origin::Schemaless);
static ATOMIC: ListType = ListType::Atomic;

impl Node {
    const fn leaf(origin: Origin) -> Node {
        Node {
            fields: BTreeMap::new(),
            elements: None,
            origin,
            map_atomic: false,
            list: None,
            strategy: PatchStrategy::NONE,
        }
    }

    /// The node of field `name`, and whether `name` is a declared (struct) field rather than a map entry.
    pub(super) fn child(&self, name: &str) -> (&Node, bool) {
        if let Some(node) = self.fields.get(name) {
            return (node, true);
        }
        if let Some(node) = &self.elements {
            return (node, false);
        }
        match self.origin {
            // Go types declare every field; the table just does not spell out the ones that merge plainly.
            Origin::Typed => (&TYPED_DEFAULT, true),
            Origin::Schemaless => (&SCHEMALESS_DEFAULT, false),
        }
    }

    /// The node of this list's items.
    pub(super) fn item(&self) -> &Node {
        match &self.list {
            Some(list) => &list.item,
            None => self.default_child(),
        }
    }

    fn default_child(&self) -> &'static Node {
        match self.origin {
            Origin::Typed => &TYPED_DEFAULT,
            Origin::Schemaless => &SCHEMALESS_DEFAULT,
        }
    }

    /// How this value merges when it is a list (atomic unless declared otherwise).
    pub(super) fn list_type(&self) -> &ListType {
        self.list.as_ref().map_or(&ATOMIC, |list| &list.list_type)
    }

    /// Default of a list-map key field, for items that omit it.
    pub(super) fn key_default(&self, key: &str) -> Option<&Value> {
        self.list
            .as_ref()
            .and_then(|list| list.key_defaults.get(key))
    }

    pub(super) fn is_atomic_map(&self) -> bool {
        self.map_atomic
    }

    pub(super) fn strategy(&self) -> &PatchStrategy {
        &self.strategy
    }

    pub(super) fn is_typed(&self) -> bool {
        self.origin == Origin::Typed
    }

    /// A map with arbitrary keys (labels, ConfigMap data) rather than a struct.
    pub(super) fn is_free_form(&self) -> bool {
        self.elements.is_some()
    }

    // Builders for the built-in table.

    fn object() -> Node {
        Node::leaf(Origin::Typed)
    }

    fn with(mut self, name: &str, node: Node) -> Node {
        self.fields.insert(name.to_string(), node);
        self
    }

    fn free_map() -> Node {
        Node {
            elements: Some(Box::new(Node::object())),
            ..Node::object()
        }
    }

    fn atomic_map() -> Node {
        Node {
            map_atomic: true,
            ..Node::object()
        }
    }

    fn atomic_list() -> Node {
        Node::list_of(ListType::Atomic, Node::object())
    }

    fn set_list() -> Node {
        Node::list_of(ListType::Set, Node::object())
    }

    fn map_list(keys: &[&str], item: Node) -> Node {
        Node::list_of(
            ListType::Map(keys.iter().map(|key| key.to_string()).collect()),
            item,
        )
    }

    fn list_of(list_type: ListType, item: Node) -> Node {
        Node {
            list: Some(ListSchema {
                list_type,
                key_defaults: BTreeMap::new(),
                item: Box::new(item),
            }),
            ..Node::object()
        }
    }

    fn defaulting_key(mut self, key: &str, value: &str) -> Node {
        if let Some(list) = &mut self.list {
            list.key_defaults
                .insert(key.to_string(), Value::String(value.to_string()));
        }
        self
    }

    /// `patchStrategy=merge` with `patchMergeKey=key` (lists of objects).
    fn merge_by(mut self, key: &str) -> Node {
        self.strategy.merge = true;
        self.strategy.merge_key = Some(key.to_string());
        self
    }

    /// `patchStrategy=merge` on a list of scalars.
    fn merge_values(mut self) -> Node {
        self.strategy.merge = true;
        self
    }

    fn retain_keys(mut self) -> Node {
        self.strategy.retain_keys = true;
        self
    }
}

/// Merge metadata for every field of one kind.
#[derive(Debug, Clone)]
pub struct MergeSchema {
    root: Node,
}

impl Default for MergeSchema {
    /// Only the rules every object shares (those of `metadata`).
    fn default() -> MergeSchema {
        MergeSchema::for_builtin("", "")
    }
}

impl MergeSchema {
    /// Merge metadata for a built-in kind (group `""` or `"core"`, `"apps"`, ...). Unknown kinds get only the
    /// object metadata rules; their other lists then behave atomically, as the apiserver does for lists it
    /// knows nothing about.
    pub fn for_builtin(group: &str, kind: &str) -> MergeSchema {
        let root = Node::object().with("metadata", object_meta());
        let root = match (group, kind) {
            ("" | "core", "Pod") => root.with("spec", pod_spec()).with("status", pod_status()),
            ("" | "core", "Service") => root
                .with("spec", service_spec())
                .with("status", service_status()),
            ("" | "core", "ConfigMap") => root
                .with("data", Node::free_map())
                .with("binaryData", Node::free_map()),
            ("" | "core", "Secret") => root
                .with("data", Node::free_map())
                .with("stringData", Node::free_map()),
            ("" | "core", "Namespace") => root
                .with(
                    "spec",
                    Node::object().with("finalizers", Node::atomic_list()),
                )
                .with("status", Node::object().with("conditions", conditions())),
            // ObjectReference is `+structType=atomic`.
            ("" | "core", "Event") => root
                .with("involvedObject", Node::atomic_map())
                .with("related", Node::atomic_map()),
            ("events.k8s.io", "Event") => root
                .with("regarding", Node::atomic_map())
                .with("related", Node::atomic_map()),
            ("apps", "Deployment") => root
                .with(
                    "spec",
                    workload_spec().with("strategy", Node::object().retain_keys()),
                )
                .with("status", Node::object().with("conditions", conditions())),
            ("apps", "ReplicaSet") => root
                .with("spec", workload_spec())
                .with("status", Node::object().with("conditions", conditions())),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                root.with("spec", crd_spec()).with("status", crd_status())
            }
            // Lease (coordination.k8s.io) has no list or map beyond its metadata.
            _ => root,
        };
        MergeSchema { root }
    }

    /// Merge metadata read from a CRD version's `openAPIV3Schema` (walking `properties`, `items` and
    /// `additionalProperties`; honouring `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
    /// `x-kubernetes-map-type` and `x-kubernetes-preserve-unknown-fields`). `metadata` always follows the
    /// ObjectMeta rules, whatever the schema says about it.
    ///
    /// Custom resources do not support strategic merge patch, so their lists carry no patch strategy.
    pub fn from_openapi_v3(schema: &Value) -> MergeSchema {
        let mut root = node_from_openapi(schema, 0);
        root.fields.insert("metadata".into(), object_meta());
        MergeSchema { root }
    }

    /// List type at a path of field names from the object root, list items transparent,
    /// e.g. `["spec", "template", "spec", "containers"]`.
    pub fn list_type(&self, path: &[&str]) -> ListType {
        self.node_at(path).list_type().clone()
    }

    /// Whether the map or struct at `path` is atomic (`x-kubernetes-map-type: atomic`, `+structType=atomic`).
    pub fn is_atomic_map(&self, path: &[&str]) -> bool {
        self.node_at(path).is_atomic_map()
    }

    /// The strategic-merge-patch strategy of the field at `path` (list items transparent).
    pub fn patch_strategy(&self, path: &[&str]) -> PatchStrategy {
        self.node_at(path).strategy().clone()
    }

    pub(super) fn root(&self) -> &Node {
        &self.root
    }

    fn node_at(&self, path: &[&str]) -> &Node {
        let mut node = &self.root;
        for name in path {
            if node.list.is_some() {
                node = node.item();
            }
            node = node.child(name).0;
        }
        node
    }
}

fn object_meta() -> Node {
    Node::object()
        .with("labels", Node::free_map())
        .with("annotations", Node::free_map())
        .with("finalizers", Node::set_list().merge_values())
        // OwnerReference is `+structType=atomic`.
        .with(
            "ownerReferences",
            Node::map_list(&["uid"], Node::atomic_map()).merge_by("uid"),
        )
        .with("managedFields", Node::atomic_list())
}

/// `[]metav1.Condition` and the per-kind condition types: merged by `type` in both vocabularies.
fn conditions() -> Node {
    Node::map_list(&["type"], Node::object()).merge_by("type")
}

/// Deployment and ReplicaSet specs: an atomic selector (`LabelSelector` is `+structType=atomic`) and a pod
/// template.
fn workload_spec() -> Node {
    Node::object()
        .with("selector", Node::atomic_map())
        .with("template", pod_template())
}

fn pod_template() -> Node {
    Node::object()
        .with("metadata", object_meta())
        .with("spec", pod_spec())
}

fn containers() -> Node {
    Node::map_list(&["name"], container()).merge_by("name")
}

fn pod_spec() -> Node {
    Node::object()
        .with("containers", containers())
        .with("initContainers", containers())
        .with("ephemeralContainers", containers())
        .with(
            "volumes",
            Node::map_list(&["name"], Node::object())
                .merge_by("name")
                .retain_keys(),
        )
        // LocalObjectReference is `+structType=atomic`.
        .with(
            "imagePullSecrets",
            Node::map_list(&["name"], Node::atomic_map()).merge_by("name"),
        )
        .with("tolerations", Node::atomic_list())
        .with(
            "hostAliases",
            Node::map_list(&["ip"], Node::object()).merge_by("ip"),
        )
        .with(
            "topologySpreadConstraints",
            Node::map_list(
                &["topologyKey", "whenUnsatisfiable"],
                Node::object().with("labelSelector", Node::atomic_map()),
            )
            .merge_by("topologyKey"),
        )
        .with("nodeSelector", Node::atomic_map())
        .with("overhead", Node::free_map())
        .with("readinessGates", Node::atomic_list())
        .with(
            "schedulingGates",
            Node::map_list(&["name"], Node::object()).merge_by("name"),
        )
        .with(
            "resourceClaims",
            Node::map_list(&["name"], Node::object())
                .merge_by("name")
                .retain_keys(),
        )
}

fn container() -> Node {
    // ObjectFieldSelector, ResourceFieldSelector, ConfigMapKeySelector and SecretKeySelector are atomic.
    let value_from = Node::object()
        .with("fieldRef", Node::atomic_map())
        .with("resourceFieldRef", Node::atomic_map())
        .with("configMapKeyRef", Node::atomic_map())
        .with("secretKeyRef", Node::atomic_map());
    let resources = Node::object()
        .with("limits", Node::free_map())
        .with("requests", Node::free_map())
        .with("claims", Node::map_list(&["name"], Node::object()));
    Node::object()
        .with(
            "ports",
            Node::map_list(&["containerPort", "protocol"], Node::object())
                .defaulting_key("protocol", "TCP")
                .merge_by("containerPort"),
        )
        .with(
            "env",
            Node::map_list(&["name"], Node::object().with("valueFrom", value_from))
                .merge_by("name"),
        )
        .with("envFrom", Node::atomic_list())
        .with(
            "volumeMounts",
            Node::map_list(&["mountPath"], Node::object()).merge_by("mountPath"),
        )
        .with(
            "volumeDevices",
            Node::map_list(&["devicePath"], Node::object()).merge_by("devicePath"),
        )
        .with("resources", resources)
        .with("resizePolicy", Node::atomic_list())
        .with("command", Node::atomic_list())
        .with("args", Node::atomic_list())
}

fn pod_status() -> Node {
    Node::object()
        .with("conditions", conditions())
        .with(
            "podIPs",
            Node::map_list(&["ip"], Node::object()).merge_by("ip"),
        )
        .with(
            "hostIPs",
            Node::map_list(&["ip"], Node::object()).merge_by("ip"),
        )
        .with("containerStatuses", Node::atomic_list())
        .with("initContainerStatuses", Node::atomic_list())
        .with("ephemeralContainerStatuses", Node::atomic_list())
}

fn service_spec() -> Node {
    Node::object()
        .with(
            "ports",
            Node::map_list(&["port", "protocol"], Node::object())
                .defaulting_key("protocol", "TCP")
                .merge_by("port"),
        )
        .with("selector", Node::atomic_map())
        .with("clusterIPs", Node::atomic_list())
        .with("externalIPs", Node::atomic_list())
        .with("ipFamilies", Node::atomic_list())
        .with("loadBalancerSourceRanges", Node::atomic_list())
}

fn service_status() -> Node {
    Node::object().with("conditions", conditions()).with(
        "loadBalancer",
        Node::object().with("ingress", Node::atomic_list()),
    )
}

/// CRD lists have `+listType` markers but no patch strategy: a strategic patch replaces `spec.versions`.
fn crd_spec() -> Node {
    Node::object()
        .with("versions", Node::atomic_list())
        .with("names", crd_names())
}

fn crd_names() -> Node {
    Node::object()
        .with("shortNames", Node::atomic_list())
        .with("categories", Node::atomic_list())
}

fn crd_status() -> Node {
    Node::object()
        .with("conditions", Node::map_list(&["type"], Node::object()))
        .with("storedVersions", Node::atomic_list())
        .with("acceptedNames", crd_names())
}

/// Deeper than any CRD schema nests; stops hostile input from exhausting the stack.
const MAX_SCHEMA_DEPTH: usize = 64;

fn node_from_openapi(schema: &Value, depth: usize) -> Node {
    let mut node = Node::leaf(Origin::Schemaless);
    let Some(schema) = schema.as_object() else {
        return node;
    };
    if depth > MAX_SCHEMA_DEPTH {
        return node;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            node.fields
                .insert(name.clone(), node_from_openapi(property, depth + 1));
        }
    }
    match schema.get("additionalProperties") {
        Some(additional @ Value::Object(_)) => {
            node.elements = Some(Box::new(node_from_openapi(additional, depth + 1)));
        }
        Some(Value::Bool(true)) => node.elements = Some(Box::new(Node::leaf(Origin::Schemaless))),
        _ => {}
    }
    node.map_atomic = schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
    let is_array = schema.get("type").and_then(Value::as_str) == Some("array");
    if is_array || schema.contains_key("items") {
        let item_schema = schema.get("items").unwrap_or(&Value::Null);
        let item = node_from_openapi(item_schema, depth + 1);
        let keys: Vec<String> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let list_type = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") if !keys.is_empty() => ListType::Map(keys.clone()),
            _ => ListType::Atomic,
        };
        let key_defaults = keys
            .iter()
            .filter_map(|key| {
                let default = item_schema.get("properties")?.get(key)?.get("default")?;
                Some((key.clone(), default.clone()))
            })
            .collect();
        node.list = Some(ListSchema {
            list_type,
            key_defaults,
            item: Box::new(item),
        });
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(keys: &[&str]) -> ListType {
        ListType::Map(keys.iter().map(|key| key.to_string()).collect())
    }

    #[test]
    fn builtin_list_types_match_the_apiserver_apply_schema() {
        let cases: Vec<(&str, &str, &[&str], ListType)> = vec![
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers"],
                map(&["name"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "initContainers"],
                map(&["name"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "ports"],
                map(&["containerPort", "protocol"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "env"],
                map(&["name"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "envFrom"],
                ListType::Atomic,
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "volumeMounts"],
                map(&["mountPath"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "args"],
                ListType::Atomic,
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "volumes"],
                map(&["name"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "imagePullSecrets"],
                map(&["name"]),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "tolerations"],
                ListType::Atomic,
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "metadata", "finalizers"],
                ListType::Set,
            ),
            (
                "apps",
                "Deployment",
                &["status", "conditions"],
                map(&["type"]),
            ),
            (
                "apps",
                "ReplicaSet",
                &["spec", "template", "spec", "containers"],
                map(&["name"]),
            ),
            (
                "apps",
                "ReplicaSet",
                &["metadata", "ownerReferences"],
                map(&["uid"]),
            ),
            ("", "Pod", &["spec", "ephemeralContainers"], map(&["name"])),
            ("", "Pod", &["status", "conditions"], map(&["type"])),
            (
                "",
                "Service",
                &["spec", "ports"],
                map(&["port", "protocol"]),
            ),
            ("", "Service", &["spec", "clusterIPs"], ListType::Atomic),
            ("", "Namespace", &["spec", "finalizers"], ListType::Atomic),
            ("", "Namespace", &["metadata", "finalizers"], ListType::Set),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &["spec", "versions"],
                ListType::Atomic,
            ),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &["status", "conditions"],
                map(&["type"]),
            ),
            (
                "coordination.k8s.io",
                "Lease",
                &["metadata", "ownerReferences"],
                map(&["uid"]),
            ),
            (
                "apps",
                "StatefulSet",
                &["spec", "template", "spec", "containers"],
                ListType::Atomic,
            ),
        ];
        for (group, kind, path, want) in cases {
            assert_eq!(
                MergeSchema::for_builtin(group, kind).list_type(path),
                want,
                "{group}/{kind} {path:?}"
            );
        }
    }

    /// group, kind, path, merges, merge key.
    type StrategyCase = (
        &'static str,
        &'static str,
        &'static [&'static str],
        bool,
        Option<&'static str>,
    );

    #[test]
    fn builtin_patch_strategies_match_the_go_tags() {
        let cases: Vec<StrategyCase> = vec![
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers"],
                true,
                Some("name"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "ports"],
                true,
                Some("containerPort"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "env"],
                true,
                Some("name"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "envFrom"],
                false,
                None,
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers", "volumeMounts"],
                true,
                Some("mountPath"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "volumes"],
                true,
                Some("name"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "imagePullSecrets"],
                true,
                Some("name"),
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "tolerations"],
                false,
                None,
            ),
            (
                "apps",
                "Deployment",
                &["metadata", "finalizers"],
                true,
                None,
            ),
            (
                "apps",
                "Deployment",
                &["metadata", "ownerReferences"],
                true,
                Some("uid"),
            ),
            (
                "apps",
                "Deployment",
                &["status", "conditions"],
                true,
                Some("type"),
            ),
            ("", "Service", &["spec", "ports"], true, Some("port")),
            ("", "Pod", &["status", "conditions"], true, Some("type")),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &["spec", "versions"],
                false,
                None,
            ),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &["status", "conditions"],
                false,
                None,
            ),
        ];
        for (group, kind, path, merge, key) in cases {
            let strategy = MergeSchema::for_builtin(group, kind).patch_strategy(path);
            assert_eq!(strategy.merge, merge, "{kind} {path:?}");
            assert_eq!(strategy.merge_key.as_deref(), key, "{kind} {path:?}");
        }
        let deployment = MergeSchema::for_builtin("apps", "Deployment");
        assert!(deployment.patch_strategy(&["spec", "strategy"]).retain_keys);
    }

    #[test]
    fn builtin_atomic_maps() {
        let cases: Vec<(&str, &str, &[&str], bool)> = vec![
            ("apps", "Deployment", &["spec", "selector"], true),
            (
                "apps",
                "Deployment",
                &["spec", "template", "spec", "nodeSelector"],
                true,
            ),
            (
                "apps",
                "Deployment",
                &["spec", "template", "metadata", "labels"],
                false,
            ),
            ("", "Service", &["spec", "selector"], true),
            ("", "ConfigMap", &["data"], false),
        ];
        for (group, kind, path, want) in cases {
            assert_eq!(
                MergeSchema::for_builtin(group, kind).is_atomic_map(path),
                want,
                "{kind} {path:?}"
            );
        }
    }

    #[test]
    fn crd_schema_extensions_are_honoured() {
        let schema = MergeSchema::from_openapi_v3(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "steps": {"type": "array", "items": {"type": "object"}},
                        "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                        "routes": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name", "namespace"],
                            "items": {"type": "object", "properties": {
                                "name": {"type": "string"},
                                "namespace": {"type": "string", "default": "default"},
                                "rules": {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}}
                            }}
                        },
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                        "extra": {"type": "object", "additionalProperties": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}
                    }
                }
            }
        }));
        let cases: Vec<(&[&str], ListType)> = vec![
            (&["spec", "steps"], ListType::Atomic),
            (&["spec", "hosts"], ListType::Set),
            (&["spec", "routes"], map(&["name", "namespace"])),
            (&["spec", "routes", "rules"], ListType::Atomic),
            (&["spec", "extra", "anything"], ListType::Set),
            (&["spec", "unknown"], ListType::Atomic),
            (&["metadata", "finalizers"], ListType::Set),
        ];
        for (path, want) in cases {
            assert_eq!(schema.list_type(path), want, "{path:?}");
        }
        assert!(schema.is_atomic_map(&["spec", "selector"]));
        assert!(!schema.is_atomic_map(&["spec"]));
        let routes = schema.root().child("spec").0.child("routes").0;
        assert_eq!(routes.key_default("namespace"), Some(&json!("default")));
        assert!(!schema.patch_strategy(&["spec", "hosts"]).merge);
    }

    #[test]
    fn map_list_without_keys_falls_back_to_atomic() {
        let schema = MergeSchema::from_openapi_v3(&json!({
            "type": "object",
            "properties": {"items": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}}}
        }));
        assert_eq!(schema.list_type(&["items"]), ListType::Atomic);
    }
}
