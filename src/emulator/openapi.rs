//! OpenAPI v3 documents, which kubectl reads for `explain` and to learn that the server validates fields
//! itself (the `fieldValidation` parameter on PATCH), so that it never needs the protobuf v2 document.

use serde_json::{Map, Value, json};

use super::resources::{Registry, ResourceType};

/// The discovery path of a group/version: `api/v1` or `apis/{group}/{version}`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group/version documents.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.groups() {
        for version in versions.keys() {
            let path = gv_path(group, version);
            let hash = gv_document(registry, group, version)
                .map(|d| fnv_hex(&d.to_string()))
                .unwrap_or_default();
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// The schema component name the apiserver uses: reversed group, version, kind.
fn component_name(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if !rt.group.contains('.') {
        format!("io.k8s.api.{}", rt.group)
    } else {
        rt.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", rt.version, rt.kind)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": s("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": s("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "List of objects depended by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow."},
        }
    })
}

fn kind_schema(rt: &ResourceType) -> Value {
    let gvk = json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
    let mut schema = rt
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(map) = schema.as_object_mut() {
        map.insert("x-kubernetes-group-version-kind".into(), gvk);
        let props = map.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}));
        }
    }
    schema
}

fn operation(rt: &ResourceType, action: &str, id: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", component_name(rt))});
    let mut op = json!({
        "operationId": format!("{id}{}", rt.kind),
        "tags": [rt.api_version()],
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    });
    if matches!(action, "patch" | "put" | "post")
        && let Some(map) = op.as_object_mut()
    {
        let types: &[&str] = match action {
            "patch" if rt.builtin => &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ],
            "patch" => &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ],
            _ => &["application/json", "application/yaml"],
        };
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        map.insert("requestBody".into(), json!({"content": content}));
    }
    op
}

/// The OpenAPI v3 document for one group/version.
pub fn gv_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.resources(group, version)?;
    let prefix = format!("/{}", gv_path(group, version));
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut patch_params: Vec<&str> = write.to_vec();
    patch_params.push("force");
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    for rt in resources.values() {
        schemas.insert(component_name(rt), kind_schema(rt));
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        paths.insert(base.clone(), json!({
            "get": operation(rt, "list", "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
            "post": operation(rt, "post", "create", &write),
            "delete": operation(rt, "deletecollection", "deleteCollection", &["labelSelector", "fieldSelector"]),
        }));
        paths.insert(format!("{base}/{{name}}"), json!({
            "get": operation(rt, "get", "read", &[]),
            "put": operation(rt, "put", "replace", &write),
            "patch": operation(rt, "patch", "patch", &patch_params),
            "delete": operation(rt, "delete", "delete", &["dryRun", "propagationPolicy", "gracePeriodSeconds"]),
        }));
        if rt.status_subresource {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({
                    "get": operation(rt, "get", "readStatus", &[]),
                    "put": operation(rt, "put", "replaceStatus", &write),
                    "patch": operation(rt, "patch", "patchStatus", &patch_params),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::KUBE_VERSION.0, super::discovery::KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A stable short hash, for cache-busting URLs.
fn fnv_hex(s: &str) -> String {
    format!("{:016X}", crate::fnv::fnv1a_64(s.bytes()))
}
