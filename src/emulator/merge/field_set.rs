//! Sets of field paths: the model behind `metadata.managedFields[].fieldsV1`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{MergeError, canonical_json, go_quote};

/// One step of a field path, named as structured-merge-diff names it.
///
/// The derived order (fields, then keys, then values, then indices) is the order the apiserver serializes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object: `f:<name>`.
    Field(String),
    /// An item of a list-map, identified by its key fields: `k:<json object>` (held as canonical JSON).
    Key(String),
    /// An item of a set, identified by its value: `v:<json>` (held as canonical JSON).
    Value(String),
    /// An item of an atomic list by position: `i:<n>`. Accepted when read, never produced.
    Index(usize),
}

impl PathElement {
    /// The element naming the list-map item whose key fields are `fields`.
    pub fn key(fields: &Map<String, Value>) -> PathElement {
        PathElement::Key(canonical_json(&Value::Object(fields.clone())))
    }

    /// The element naming the set item `value`.
    pub fn value(value: &Value) -> PathElement {
        PathElement::Value(canonical_json(value))
    }

    /// The key this element has in a fieldsV1 object.
    fn fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    fn parse_fields_v1_key(text: &str) -> Result<PathElement, String> {
        let Some((prefix, rest)) = text.split_once(':') else {
            return Err(format!("unknown path element {text:?}"));
        };
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(fields)) => Ok(PathElement::key(&fields)),
                _ => Err(format!("key path element {text:?} is not a JSON object")),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|value| PathElement::value(&value))
                .map_err(|error| format!("value path element {text:?}: {error}")),
            "i" => rest
                .parse::<usize>()
                .map(PathElement::Index)
                .map_err(|error| format!("index path element {text:?}: {error}")),
            _ => Err(format!("unknown path element {text:?}")),
        }
    }
}

impl fmt::Display for PathElement {
    /// As in apiserver messages: `.name`, `[name="app"]`, `[="value"]`, `[3]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(fields)) => {
                    let parts: Vec<String> = fields
                        .iter()
                        .map(|(name, value)| format!("{name}={}", render(value)))
                        .collect();
                    write!(f, "[{}]", parts.join(","))
                }
                _ => write!(f, "[{json}]"),
            },
            PathElement::Value(json) => match serde_json::from_str::<Value>(json) {
                Ok(value) => write!(f, "[={}]", render(&value)),
                Err(_) => write!(f, "[={json}]"),
            },
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A value as structured-merge-diff prints it inside path elements: strings quoted, the rest bare.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(",")
        ),
        Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| format!("{name}={}", render(value)))
            .collect(),
        other => canonical_json(other),
    }
}

/// A set of field paths, stored as a tree. A node is a *member* when the path leading to it is in the set
/// (in fieldsV1: a leaf `{}`, or `".": {}` next to children); a non-member node only leads to members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

/// The empty set, for walks that need "no ownership below here" by reference.
pub(super) static EMPTY_FIELD_SET: FieldSet = FieldSet::new();

impl FieldSet {
    /// The empty set.
    pub const fn new() -> FieldSet {
        FieldSet {
            member: false,
            children: BTreeMap::new(),
        }
    }

    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds `path`. The empty path (the object itself) is never tracked and is ignored.
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let child = self.children.entry(first.clone()).or_default();
        if rest.is_empty() {
            child.member = true;
        } else {
            child.insert(rest);
        }
    }

    /// True when `path` itself is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, rest)) => match self.children.get(first) {
                None => false,
                Some(child) if rest.is_empty() => child.member,
                Some(child) => child.contains(rest),
            },
        }
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (element, theirs) in &other.children {
            match out.children.get_mut(element) {
                Some(ours) => *ours = ours.union(theirs),
                None => {
                    out.children.insert(element.clone(), theirs.clone());
                }
            }
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, ours) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = ours.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Paths in `self` but not in `other`. Path by path: removing a parent does not remove its children.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, ours) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => ours.difference(theirs),
                None => ours.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    /// Removes `path` and everything below it.
    pub fn remove_subtree(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.children.remove(first);
            return;
        }
        if let Some(child) = self.children.get_mut(first) {
            child.remove_subtree(rest);
            if child.is_empty() {
                self.children.remove(first);
            }
        }
    }

    /// Every path in the set, in serialization order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (element, child) in &self.children {
            prefix.push(element.clone());
            if child.member {
                out.push(prefix.clone());
            }
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// A path written as the apiserver writes it: `.spec.template.spec.containers[name="app"].image`.
    pub fn path_string(path: &[PathElement]) -> String {
        path.iter().map(PathElement::to_string).collect()
    }

    /// Whether the path leading to this node is itself in the set.
    pub(super) fn is_member(&self) -> bool {
        self.member
    }

    /// Whether any path continues below this node.
    pub(super) fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// The subtree under one path element.
    pub(super) fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// The subtrees under each path element, in order.
    pub(super) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    /// Reads the `fieldsV1` format of a managedFields entry.
    pub fn from_fields_v1(fields: &Value) -> Result<FieldSet, MergeError> {
        parse_node(fields, 0)
            .map_err(|message| MergeError::bad_request(format!("invalid fieldsV1: {message}")))
    }

    /// Writes the `fieldsV1` format of a managedFields entry.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.children_to_fields_v1())
    }

    fn children_to_fields_v1(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (element, child) in &self.children {
            let mut inner = Map::new();
            if child.member && child.has_children() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            inner.extend(child.children_to_fields_v1());
            out.insert(element.fields_v1_key(), Value::Object(inner));
        }
        out
    }
}

/// Deeper than any Kubernetes object nests; stops hostile input from exhausting the stack.
const MAX_DEPTH: usize = 128;

fn parse_node(fields: &Value, depth: usize) -> Result<FieldSet, String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    let Value::Object(map) = fields else {
        return Err(format!(
            "expected an object, got {}",
            canonical_json(fields)
        ));
    };
    let mut set = FieldSet::new();
    for (key, value) in map {
        if key == "." {
            set.member = true;
            continue;
        }
        let element = PathElement::parse_fields_v1_key(key)?;
        let mut child = parse_node(value, depth + 1)?;
        if child.children.is_empty() {
            // A leaf `{}` is a member by definition.
            child.member = true;
        }
        let merged = match set.children.remove(&element) {
            // Two spellings of one key (e.g. reordered `k:` fields) name the same path.
            Some(existing) => existing.union(&child),
            None => child,
        };
        set.children.insert(element, merged);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn set_of(fields_v1: Value) -> FieldSet {
        FieldSet::from_fields_v1(&fields_v1).unwrap()
    }

    #[test]
    fn fields_v1_round_trips() {
        let cases = [
            json!({"f:metadata": {"f:labels": {"f:app": {}}}}),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}}),
            json!({"f:metadata": {"f:finalizers": {"v:\"weir.io/cleanup\"": {}}}}),
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}),
        ];
        for fields_v1 in cases {
            assert_eq!(set_of(fields_v1.clone()).to_fields_v1(), fields_v1);
        }
    }

    #[test]
    fn fields_v1_key_spellings_are_normalised() {
        let set =
            set_of(json!({"f:ports": {"k:{\"protocol\":\"TCP\",\"containerPort\":80.0}": {}}}));
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}})
        );
    }

    #[test]
    fn malformed_fields_v1_is_rejected() {
        let cases = [
            json!([]),
            json!({"x:y": {}}),
            json!({"k:[1]": {}}),
            json!({"f:a": "b"}),
            json!({"i:z": {}}),
        ];
        for fields_v1 in cases {
            let error = FieldSet::from_fields_v1(&fields_v1).unwrap_err();
            assert_eq!(error.code(), 400, "{fields_v1}");
        }
    }

    #[test]
    fn members_follow_dot_and_leaves() {
        let set = set_of(
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:replicas": {}}}),
        );
        let cases: [(&[&str], bool); 5] = [
            (&["metadata"], false),
            (&["metadata", "labels"], true),
            (&["metadata", "labels", "app"], true),
            (&["spec", "replicas"], true),
            (&["spec"], false),
        ];
        for (path, want) in cases {
            let path: Vec<PathElement> = path.iter().map(|name| field(name)).collect();
            assert_eq!(set.contains(&path), want, "{path:?}");
        }
    }

    #[test]
    fn set_algebra_works_path_by_path() {
        let a = set_of(
            json!({"f:spec": {"f:replicas": {}, "f:paused": {}}, "f:metadata": {"f:labels": {".": {}, "f:x": {}}}}),
        );
        let b =
            set_of(json!({"f:spec": {"f:replicas": {}}, "f:metadata": {"f:labels": {".": {}}}}));
        assert_eq!(
            a.union(&b).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}, "f:spec": {"f:paused": {}, "f:replicas": {}}})
        );
        assert_eq!(
            a.intersection(&b).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {}}, "f:spec": {"f:replicas": {}}})
        );
        // Removing the labels map itself leaves the label inside it owned.
        assert_eq!(
            a.difference(&b).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:spec": {"f:paused": {}}})
        );
        assert!(a.difference(&a).is_empty());
        assert!(FieldSet::new().union(&FieldSet::new()).is_empty());
    }

    #[test]
    fn remove_subtree_prunes_empty_parents() {
        let mut set = set_of(json!({"f:metadata": {"f:name": {}}, "f:spec": {"f:replicas": {}}}));
        set.remove_subtree(&[field("metadata"), field("name")]);
        assert_eq!(set.to_fields_v1(), json!({"f:spec": {"f:replicas": {}}}));
    }

    #[test]
    fn paths_print_like_the_apiserver() {
        let set = set_of(json!({
            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}},
            "f:metadata": {"f:finalizers": {"v:\"a\"": {}}},
            "f:status": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {}}}
        }));
        let printed: Vec<String> = set
            .paths()
            .iter()
            .map(|path| FieldSet::path_string(path))
            .collect();
        assert_eq!(
            printed,
            [
                ".metadata.finalizers[=\"a\"]",
                ".spec.template.spec.containers[name=\"app\"].image",
                ".status.ports[port=80,protocol=\"TCP\"]",
            ]
        );
    }
}
