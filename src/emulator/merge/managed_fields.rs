//! Reading and writing `metadata.managedFields`.

use serde_json::{Map, Value, json};

use super::FieldConflict;
use super::field_set::{FieldSet, PathElement};

/// The operation a managedFields entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One decoded managedFields entry.
#[derive(Debug, Clone)]
pub(super) struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    /// Whether both entries belong to the same owner. The apiserver identifies appliers by manager, operation
    /// and subresource, and updaters additionally by apiVersion.
    pub(super) fn same_owner(&self, other: &ManagedEntry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// The conflict this entry's ownership of `path` causes.
    pub(super) fn conflict(&self, path: &[PathElement]) -> FieldConflict {
        FieldConflict {
            manager: self.manager.clone(),
            operation: self.operation.as_str().to_string(),
            api_version: self.api_version.clone(),
            subresource: self.subresource.clone(),
            field: FieldSet::path_string(path),
        }
    }

    fn decode(entry: &Value) -> Option<ManagedEntry> {
        let entry = entry.as_object()?;
        let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_string);
        let manager = text("manager").filter(|manager| !manager.is_empty())?;
        let operation = match entry.get("operation").and_then(Value::as_str)? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        if text("fieldsType").is_some_and(|fields_type| fields_type != "FieldsV1") {
            return None;
        }
        let fields = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(fields) => FieldSet::from_fields_v1(fields).ok()?,
        };
        Some(ManagedEntry {
            manager,
            operation,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource").filter(|subresource| !subresource.is_empty()),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), Value::String(self.manager.clone()));
        entry.insert(
            "operation".into(),
            Value::String(self.operation.as_str().to_string()),
        );
        entry.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(time) = &self.time {
            entry.insert("time".into(), Value::String(time.clone()));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), Value::String(subresource.clone()));
        }
        Value::Object(entry)
    }
}

/// Decodes a managedFields list. Entries that cannot be read are dropped rather than failing the write (an
/// entry written by a buggy client should not lock everyone out of the object); entries of one owner merge.
pub(super) fn decode(list: Option<&Value>) -> Vec<ManagedEntry> {
    let mut entries: Vec<ManagedEntry> = Vec::new();
    for entry in list.and_then(Value::as_array).into_iter().flatten() {
        let Some(entry) = ManagedEntry::decode(entry) else {
            continue;
        };
        match entries
            .iter_mut()
            .find(|existing| existing.same_owner(&entry))
        {
            Some(existing) => existing.fields = existing.fields.union(&entry.fields),
            None => entries.push(entry),
        }
    }
    entries
}

/// The managedFields list of `object`, if any.
pub(super) fn managed_fields_of(object: &Value) -> Option<&Value> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("managedFields"))
}

/// A copy of `object` without `metadata.managedFields`, for merging and comparing.
pub(super) fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    copy
}

/// Writes `entries` into `object.metadata.managedFields`, dropping empty ones, in the apiserver's order
/// (operation, then time, manager, apiVersion, subresource). No entries: the field is removed.
pub(super) fn write(object: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|entry| !entry.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            a.operation.as_str(),
            a.time.as_deref().unwrap_or(""),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation.as_str(),
                b.time.as_deref().unwrap_or(""),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(body) = object.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        return;
    }
    let encoded = Value::Array(entries.iter().map(ManagedEntry::encode).collect());
    let metadata = body
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.insert("managedFields".into(), encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_sort_like_the_apiserver() {
        let list = json!([
            {"manager": "weir", "operation": "Update", "apiVersion": "apps/v1", "time": "2026-01-01T00:00:02Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}}},
            {"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "time": "2026-01-01T00:00:01Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"},
            {"manager": "weir", "operation": "Apply", "apiVersion": "apps/v1", "time": "2026-01-01T00:00:03Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}}
        ]);
        let mut object = json!({"metadata": {"name": "x"}});
        write(&mut object, decode(Some(&list)));
        let managers: Vec<(&str, &str)> = object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["manager"].as_str().unwrap(),
                    entry["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            managers,
            [("weir", "Apply"), ("kubectl", "Update"), ("weir", "Update")]
        );
        assert_eq!(object["metadata"]["managedFields"][1], list[1]);
    }

    #[test]
    fn unreadable_and_empty_entries_are_dropped() {
        let list = json!([
            {},
            {"manager": "a", "operation": "Patch", "fieldsV1": {}},
            {"manager": "b", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV1": {}},
            {"manager": "c", "operation": "Update", "fieldsV1": {"x:y": {}}},
            {"manager": "d", "operation": "Update", "apiVersion": "v1", "fieldsV1": {}}
        ]);
        let entries = decode(Some(&list));
        assert_eq!(
            entries
                .iter()
                .map(|entry| entry.manager.as_str())
                .collect::<Vec<_>>(),
            ["d"]
        );
        let mut object = json!({"metadata": {"managedFields": list}});
        write(&mut object, entries);
        assert_eq!(object, json!({"metadata": {}}));
    }

    #[test]
    fn owners_are_identified_like_the_apiserver() {
        let entry =
            |operation: Operation, api_version: &str, subresource: Option<&str>| ManagedEntry {
                manager: "m".into(),
                operation,
                api_version: api_version.into(),
                time: None,
                subresource: subresource.map(str::to_string),
                fields: FieldSet::new(),
            };
        let cases = [
            (
                entry(Operation::Apply, "v1", None),
                entry(Operation::Apply, "v2", None),
                true,
            ),
            (
                entry(Operation::Update, "v1", None),
                entry(Operation::Update, "v2", None),
                false,
            ),
            (
                entry(Operation::Update, "v1", None),
                entry(Operation::Apply, "v1", None),
                false,
            ),
            (
                entry(Operation::Update, "v1", Some("status")),
                entry(Operation::Update, "v1", None),
                false,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.same_owner(&b), want, "{a:?} {b:?}");
        }
    }
}
