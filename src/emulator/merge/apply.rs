//! Server-side apply and field ownership for every other write, following structured-merge-diff as the
//! apiserver runs it.

use serde_json::{Map, Value};

use super::field_set::{FieldSet, PathElement};
use super::list_types::MergeSchema;
use super::managed_fields::{self, ManagedEntry, Operation};
use super::typed_value::{compare, merge_applied, prune, strip_applied_nulls, to_field_set};
use super::{MergeError, values_equal};

/// Metadata the server owns; never part of anyone's field set.
const UNTRACKED_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "selfLink",
    "clusterName",
];

/// Server-side apply of `applied` (a partial object) by `manager`. `live` is `None` on create.
///
/// Returns the new full object with `metadata.managedFields` updated: the applier's entry (operation `Apply`,
/// `apiVersion` of the applied object, `fieldsType: FieldsV1`, `subresource` when given) holds exactly the
/// fields the configuration sets; fields it set last time and omits now are removed unless another manager owns
/// them too. Changing a field another manager owns is a [`MergeError::Conflict`], unless `force` moves the
/// field to the applier. Re-applying the same configuration returns the live object unchanged, `time` included.
///
/// The caller still owns the apiserver's other duties: stripping `status` from main-resource applies (and
/// everything but `status` from status applies) of kinds with a status subresource, restoring system metadata
/// (`uid`, `resourceVersion`, `creationTimestamp` ...), and defaulting.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: &MergeSchema,
    now: &str,
    subresource: Option<&str>,
) -> Result<Value, MergeError> {
    if !applied.is_object() {
        return Err(MergeError::bad_request(
            "the applied configuration must be a JSON object",
        ));
    }
    if managed_fields::managed_fields_of(applied).is_some_and(|fields| !fields.is_null()) {
        return Err(MergeError::bad_request(
            "metadata.managedFields must be nil",
        ));
    }
    let config = without_null_untracked(applied);
    let root = schema.root();
    let applied_set = to_field_set(&config, root)
        .map(|claimed| without_untracked(&claimed))
        .map_err(|error| {
            MergeError::bad_request(format!(
                "failed to create typed patch object ({}): {error}",
                group_version_kind(applied)
            ))
        })?;

    let live_body = live.map_or_else(
        || Value::Object(Map::new()),
        managed_fields::without_managed_fields,
    );
    let mut others = managed_fields::decode(live.and_then(managed_fields::managed_fields_of));
    let mut me = ManagedEntry {
        manager: manager.to_string(),
        operation: Operation::Apply,
        api_version: applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        time: Some(now.to_string()),
        subresource: subresource.map(str::to_string),
        fields: applied_set,
    };
    let previous = others
        .iter()
        .position(|entry| entry.same_owner(&me))
        .map(|index| others.remove(index));

    let mut merged = merge_applied(Some(&live_body), &config, root);
    if let Some(previous) = &previous {
        // Server-owned metadata counts as claimed, so `metadata` (which always holds `name`) is never removed
        // along with the labels the applier gave up.
        let owned = others
            .iter()
            .fold(me.fields.clone(), |owned, entry| owned.union(&entry.fields));
        prune(
            &mut merged,
            &previous.fields,
            &owned.union(&untracked_paths()),
            root,
        );
    }

    let comparison = compare(&live_body, &merged, root);
    let changed = without_untracked(&comparison.added.union(&comparison.modified));
    let removed = without_untracked(&comparison.removed);
    let conflicts: Vec<_> = others
        .iter()
        .flat_map(|entry| {
            let taken = entry.fields.intersection(&changed);
            taken
                .paths()
                .into_iter()
                .map(|path| entry.conflict(&path))
                .collect::<Vec<_>>()
        })
        .collect();
    if !force && !conflicts.is_empty() {
        return Err(MergeError::Conflict { conflicts });
    }
    for entry in &mut others {
        entry.fields = entry.fields.difference(&changed).difference(&removed);
    }

    strip_applied_nulls(&mut merged, &config, root);
    if let Some(previous) = previous {
        let unchanged = values_equal(&merged, &live_body)
            && previous.fields == me.fields
            && previous.api_version == me.api_version;
        if unchanged {
            // A no-op apply leaves the object byte-for-byte alone, so the caller can skip the write.
            me.time = previous.time;
        }
    }
    others.push(me);
    managed_fields::write(&mut merged, others);
    Ok(merged)
}

/// For non-apply writes (create, update/PUT, merge/JSON/strategic patch): gives `manager` (operation `Update`)
/// ownership of every field whose value changed between `old` and `new`, removes those fields (and deleted
/// ones) from other managers, and writes `metadata.managedFields` into `new`.
///
/// On create (`old` is `None`) every field of `new` counts as changed. Managed fields sent in the request
/// replace the stored ones (as `kubectl replace` of a fetched object does); `[{}]` clears them. Writes through
/// a subresource always start from the stored entries.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: &MergeSchema,
    now: &str,
    subresource: Option<&str>,
) {
    if !new.is_object() {
        return;
    }
    let sent = managed_fields::managed_fields_of(new)
        .filter(|list| list.as_array().is_some_and(|list| !list.is_empty()));
    let mut entries = match sent {
        Some(list) if subresource.is_none() => managed_fields::decode(Some(list)),
        _ => managed_fields::decode(old.and_then(managed_fields::managed_fields_of)),
    };
    let old_body = old.map_or_else(
        || Value::Object(Map::new()),
        managed_fields::without_managed_fields,
    );
    let new_body = managed_fields::without_managed_fields(new);
    let comparison = compare(&old_body, &new_body, schema.root());
    let changed = without_untracked(&comparison.added.union(&comparison.modified));
    let removed = without_untracked(&comparison.removed);
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        let me = ManagedEntry {
            manager: manager.to_string(),
            operation: Operation::Update,
            api_version: new
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            time: Some(now.to_string()),
            subresource: subresource.map(str::to_string),
            fields: changed,
        };
        match entries.iter_mut().find(|entry| entry.same_owner(&me)) {
            Some(entry) => {
                entry.fields = entry.fields.union(&me.fields);
                entry.time = me.time;
            }
            None => entries.push(me),
        }
    }
    managed_fields::write(new, entries);
}

/// Paths of the fields nobody owns: apiVersion, kind and server-set metadata.
fn untracked_paths() -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[PathElement::Field("apiVersion".into())]);
    set.insert(&[PathElement::Field("kind".into())]);
    for name in UNTRACKED_METADATA {
        set.insert(&[
            PathElement::Field("metadata".into()),
            PathElement::Field(name.into()),
        ]);
    }
    set
}

fn without_untracked(set: &FieldSet) -> FieldSet {
    let mut out = set.clone();
    for path in untracked_paths().paths() {
        out.remove_subtree(&path);
    }
    out
}

/// The applied configuration minus untracked fields set to `null` (`creationTimestamp: null` in generated
/// manifests must not erase the live value).
fn without_null_untracked(applied: &Value) -> Value {
    let mut config = applied.clone();
    if let Some(body) = config.as_object_mut() {
        body.retain(|name, value| !(value.is_null() && (name == "apiVersion" || name == "kind")));
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.retain(|name, value| {
                !(value.is_null() && UNTRACKED_METADATA.contains(&name.as_str()))
            });
        }
    }
    config
}

/// `apps/v1, Kind=Deployment` (core group: `/v1, Kind=Service`), as apiserver messages name a kind.
fn group_version_kind(object: &Value) -> String {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version.contains('/') {
        format!("{api_version}, Kind={kind}")
    } else {
        format!("/{api_version}, Kind={kind}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";
    const T2: &str = "2026-01-01T00:02:00Z";

    fn deployment_schema() -> MergeSchema {
        MergeSchema::for_builtin("apps", "Deployment")
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn web_config(image: &str, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn apply(
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, MergeError> {
        server_side_apply(
            live,
            config,
            manager,
            force,
            &deployment_schema(),
            now,
            None,
        )
    }

    /// managedFields entries as (manager, operation, subresource) → fieldsV1.
    fn owners(object: &Value) -> Vec<(String, String, Option<String>, Value)> {
        object["metadata"]["managedFields"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        (
                            entry["manager"].as_str().unwrap().to_string(),
                            entry["operation"].as_str().unwrap().to_string(),
                            entry["subresource"].as_str().map(str::to_string),
                            entry["fieldsV1"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn fields_of(object: &Value, manager: &str, operation: &str) -> Value {
        owners(object)
            .into_iter()
            .find(|(m, o, _, _)| m == manager && o == operation)
            .map(|(_, _, _, fields)| fields)
            .unwrap_or(Value::Null)
    }

    fn without_managed(object: &Value) -> Value {
        managed_fields::without_managed_fields(object)
    }

    #[test]
    fn create_records_the_applied_fields() {
        let created = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        assert_eq!(without_managed(&created), web_config("web:1", 2));
        let entry = &created["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "weir");
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["apiVersion"], "apps/v1");
        assert_eq!(entry["time"], T0);
        assert_eq!(entry["fieldsType"], "FieldsV1");
        assert!(entry.get("subresource").is_none());
        assert_eq!(
            entry["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let service_schema = MergeSchema::for_builtin("", "Service");
        let crd_schema = MergeSchema::from_openapi_v3(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "steps": {"type": "array", "items": {"type": "object"}},
                "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
            }}}
        }));
        let cases = [
            ("deployment", deployment_schema(), web_config("web:1", 2)),
            (
                "service with defaulted key field",
                service_schema,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "creationTimestamp": null},
                       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}}),
            ),
            (
                "custom resource with atomic and set lists",
                crd_schema,
                json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"},
                       "spec": {"steps": [{"setWeight": 10}, {"pause": {}}], "hosts": ["a", "b"], "extra": {"x": null, "y": 1}}}),
            ),
        ];
        for (name, schema, config) in cases {
            let first = server_side_apply(None, &config, "weir", false, &schema, T0, None).unwrap();
            let second =
                server_side_apply(Some(&first), &config, "weir", false, &schema, T1, None).unwrap();
            assert_eq!(second, first, "{name}: re-apply changed the object");
            let third =
                server_side_apply(Some(&second), &config, "weir", true, &schema, T2, None).unwrap();
            assert_eq!(third, first, "{name}: forced re-apply changed the object");
        }
    }

    #[test]
    fn changing_an_applied_field_updates_value_and_time() {
        let first = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let second = apply(Some(&first), &web_config("web:2", 2), "weir", false, T1).unwrap();
        assert_eq!(without_managed(&second), web_config("web:2", 2));
        assert_eq!(second["metadata"]["managedFields"][0]["time"], T1);
        assert_eq!(
            fields_of(&second, "weir", "Apply"),
            fields_of(&first, "weir", "Apply")
        );
    }

    #[test]
    fn conflicts_name_every_contested_field_and_force_takes_them() {
        let live = apply(None, &web_config("web:1", 2), "gitops", false, T0).unwrap();
        let error = apply(Some(&live), &web_config("web:2", 5), "weir", false, T1).unwrap_err();
        assert_eq!(error.code(), 409);
        assert_eq!(
            error.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"gitops\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"app\"].image"
        );
        let causes = error.causes();
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].reason, "FieldManagerConflict");
        assert_eq!(causes[0].message, "conflict with \"gitops\"");
        assert_eq!(causes[0].field, ".spec.replicas");

        let forced = apply(Some(&live), &web_config("web:2", 5), "weir", true, T1).unwrap();
        assert_eq!(without_managed(&forced), web_config("web:2", 5));
        let gitops = fields_of(&forced, "gitops", "Apply");
        assert!(gitops["f:spec"].get("f:replicas").is_none(), "{gitops}");
        assert!(
            gitops["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]
                .get("f:image")
                .is_none()
        );
        // Fields both set to the same value stay shared.
        assert_eq!(gitops["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        let weir = fields_of(&forced, "weir", "Apply");
        assert_eq!(weir["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn same_values_are_shared_without_conflict() {
        let live = apply(None, &web_config("web:1", 2), "gitops", false, T0).unwrap();
        let shared = apply(Some(&live), &web_config("web:1", 2), "weir", false, T1).unwrap();
        assert_eq!(without_managed(&shared), without_managed(&live));
        assert_eq!(
            fields_of(&shared, "weir", "Apply"),
            fields_of(&shared, "gitops", "Apply")
        );
    }

    #[test]
    fn kubectl_scale_then_apply_conflicts_on_replicas() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&live),
            &mut scaled,
            "kubectl",
            &deployment_schema(),
            T1,
            Some("scale"),
        );
        assert_eq!(
            owners(&scaled)
                .iter()
                .map(|(m, o, s, _)| (m.as_str(), o.as_str(), s.as_deref()))
                .collect::<Vec<_>>(),
            [
                ("weir", "Apply", None),
                ("kubectl", "Update", Some("scale"))
            ]
        );
        assert_eq!(
            fields_of(&scaled, "kubectl", "Update"),
            json!({"f:spec": {"f:replicas": {}}})
        );

        let error = apply(Some(&scaled), &web_config("web:1", 2), "weir", false, T2).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            error.to_status()["details"]["causes"][0],
            json!({"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\" with subresource \"scale\" using apps/v1", "field": ".spec.replicas"})
        );

        // Leaving replicas out of the configuration hands them to whoever scaled: no conflict, no pruning.
        let mut without_replicas = web_config("web:1", 2);
        without_replicas["spec"]
            .as_object_mut()
            .unwrap()
            .remove("replicas");
        let applied = apply(Some(&scaled), &without_replicas, "weir", false, T2).unwrap();
        assert_eq!(applied["spec"]["replicas"], 5);

        let forced = apply(Some(&scaled), &web_config("web:1", 2), "weir", true, T2).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert_eq!(
            owners(&forced).len(),
            1,
            "kubectl's emptied entry is dropped"
        );
    }

    #[test]
    fn client_side_apply_ownership_conflicts_with_server_side_apply() {
        // `kubectl apply` (client-side) creates the object as an Update by kubectl-client-side-apply ...
        let mut created = web_config("web:1", 2);
        record_update(
            None,
            &mut created,
            "kubectl-client-side-apply",
            &deployment_schema(),
            T0,
            None,
        );
        // ... and a later client-side apply is a strategic merge patch recorded the same way.
        let patched = super::super::strategic_merge(
            &created,
            &json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "app"}], "containers": [{"name": "app", "image": "web:2"}]}}}}),
            &deployment_schema(),
        )
        .unwrap();
        let mut patched = patched;
        record_update(
            Some(&created),
            &mut patched,
            "kubectl-client-side-apply",
            &deployment_schema(),
            T1,
            None,
        );
        assert_eq!(owners(&patched).len(), 1);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );

        let error = apply(Some(&patched), &web_config("web:2", 3), "weir", false, T2).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn two_appliers_keep_their_own_list_items() {
        let with_containers = |names: &[&str]| {
            let containers: Vec<Value> = names
                .iter()
                .map(|name| json!({"name": name, "image": format!("{name}:1")}))
                .collect();
            deployment(json!({"template": {"spec": {"containers": containers}}}))
        };
        let live = apply(None, &with_containers(&["a", "b"]), "gitops", false, T0).unwrap();
        let live = apply(Some(&live), &with_containers(&["c"]), "mesh", false, T1).unwrap();
        let names = |object: &Value| -> Vec<String> {
            object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|container| container["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&live), ["a", "b", "c"]);
        // Re-applying keeps the interleaved item where it is.
        assert_eq!(
            apply(
                Some(&live),
                &with_containers(&["a", "b"]),
                "gitops",
                false,
                T2
            )
            .unwrap(),
            live
        );
        let dropped = apply(Some(&live), &with_containers(&["a"]), "gitops", false, T2).unwrap();
        assert_eq!(names(&dropped), ["a", "c"]);
        let dropped = apply(Some(&dropped), &with_containers(&[]), "mesh", false, T2).unwrap();
        assert_eq!(names(&dropped), ["a"]);
    }

    #[test]
    fn omitted_fields_are_removed_unless_co_owned() {
        let mut config = web_config("web:1", 2);
        config["metadata"]["labels"] = json!({"app": "web", "team": "a", "tier": "front"});
        config["spec"]["paused"] = json!(true);
        let live = apply(None, &config, "weir", false, T0).unwrap();
        // Another applier shares the `tier` label.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"tier": "front"}}});
        let live = apply(Some(&live), &other, "platform", false, T1).unwrap();

        let trimmed = apply(Some(&live), &web_config("web:1", 2), "weir", false, T2).unwrap();
        assert_eq!(
            trimmed["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        assert!(trimmed["spec"].get("paused").is_none());
        assert_eq!(trimmed["metadata"]["name"], "web");
        assert_eq!(trimmed["metadata"]["namespace"], "default");
        let weir = fields_of(&trimmed, "weir", "Apply");
        assert_eq!(weir["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(
            fields_of(&trimmed, "platform", "Apply"),
            json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
        );
    }

    #[test]
    fn removal_is_blocked_by_an_updater_sharing_the_field() {
        // kubectl create owns everything it created; weir then applies the same annotation (shared).
        let mut created = web_config("web:1", 2);
        created["metadata"]["annotations"] = json!({"note": "x"});
        record_update(
            None,
            &mut created,
            "kubectl-create",
            &deployment_schema(),
            T0,
            None,
        );
        let mut config = web_config("web:1", 2);
        config["metadata"]["annotations"] = json!({"note": "x"});
        let shared = apply(Some(&created), &config, "weir", false, T1).unwrap();
        assert_eq!(
            fields_of(&shared, "weir", "Apply")["f:metadata"]["f:annotations"],
            json!({"f:note": {}})
        );

        let applied = apply(Some(&shared), &web_config("web:1", 2), "weir", false, T2).unwrap();
        assert_eq!(applied["metadata"]["annotations"], json!({"note": "x"}));
        assert!(
            fields_of(&applied, "weir", "Apply")["f:metadata"]
                .get("f:annotations")
                .is_none()
        );
    }

    #[test]
    fn fields_taken_over_by_an_updater_are_not_pruned() {
        let mut config = web_config("web:1", 2);
        config["metadata"]["annotations"] = json!({"note": "x"});
        let live = apply(None, &config, "weir", false, T0).unwrap();
        // A controller rewrites the annotation with a PUT: it now owns it alone.
        let mut updated = live.clone();
        updated["metadata"]["annotations"]["note"] = json!("y");
        record_update(
            Some(&live),
            &mut updated,
            "controller",
            &deployment_schema(),
            T1,
            None,
        );
        let applied = apply(Some(&updated), &web_config("web:1", 2), "weir", false, T2).unwrap();
        assert_eq!(applied["metadata"]["annotations"], json!({"note": "y"}));
    }

    #[test]
    fn list_map_items_merge_with_items_of_other_managers() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        // A mesh injector adds a sidecar and an env var to the app container through a patch.
        let mut injected = live.clone();
        injected["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "app", "image": "web:1", "ports": [{"containerPort": 80}], "env": [{"name": "MESH", "value": "on"}]},
            {"name": "proxy", "image": "envoy"}
        ]);
        record_update(
            Some(&live),
            &mut injected,
            "injector",
            &deployment_schema(),
            T1,
            None,
        );
        assert_eq!(
            fields_of(&injected, "injector", "Update")["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({
                "k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"MESH\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                "k:{\"name\":\"proxy\"}": {".": {}, "f:image": {}, "f:name": {}}
            })
        );

        let applied = apply(Some(&injected), &web_config("web:2", 2), "weir", false, T2).unwrap();
        assert_eq!(
            applied["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "app", "image": "web:2", "ports": [{"containerPort": 80}], "env": [{"name": "MESH", "value": "on"}]},
                {"name": "proxy", "image": "envoy"}
            ])
        );
    }

    #[test]
    fn list_map_items_dropped_from_the_configuration_are_removed() {
        let mut two = web_config("web:1", 2);
        two["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "worker", "image": "worker:1"}));
        let live = apply(None, &two, "weir", false, T0).unwrap();
        let applied = apply(Some(&live), &web_config("web:1", 2), "weir", false, T1).unwrap();
        assert_eq!(without_managed(&applied), web_config("web:1", 2));
    }

    #[test]
    fn atomic_values_are_owned_and_replaced_whole() {
        let mut config = web_config("web:1", 2);
        config["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}]);
        config["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--a", "--b"]);
        let live = apply(None, &config, "weir", false, T0).unwrap();
        let pod = &fields_of(&live, "weir", "Apply")["f:spec"]["f:template"]["f:spec"];
        assert_eq!(pod["f:tolerations"], json!({}));
        assert_eq!(
            pod["f:containers"]["k:{\"name\":\"app\"}"]["f:args"],
            json!({})
        );

        // Another manager's atomic selector change conflicts as one field.
        let mut selector = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                                  "spec": {"selector": {"matchLabels": {"app": "web", "extra": "x"}}}});
        let error = apply(Some(&live), &selector, "other", false, T1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"weir\": .spec.selector"
        );

        config["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "b", "operator": "Exists"}]);
        config["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--c"]);
        let replaced = apply(Some(&live), &config, "weir", false, T1).unwrap();
        assert_eq!(
            replaced["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(
            replaced["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["--c"])
        );

        selector["spec"]["selector"]["matchLabels"] = json!({"app": "web"});
        let shared = apply(Some(&replaced), &selector, "other", false, T2).unwrap();
        assert_eq!(
            shared["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
    }

    #[test]
    fn sets_merge_by_value() {
        let schema = MergeSchema::for_builtin("", "ConfigMap");
        let with_finalizers = |finalizers: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": finalizers}});
        let live = server_side_apply(
            None,
            &with_finalizers(json!(["a.io/x"])),
            "one",
            false,
            &schema,
            T0,
            None,
        )
        .unwrap();
        let both = server_side_apply(
            Some(&live),
            &with_finalizers(json!(["b.io/y"])),
            "two",
            false,
            &schema,
            T1,
            None,
        )
        .unwrap();
        assert_eq!(both["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
        assert_eq!(
            fields_of(&both, "two", "Apply"),
            json!({"f:metadata": {"f:finalizers": {"v:\"b.io/y\"": {}}}})
        );
        let dropped = server_side_apply(
            Some(&both),
            &with_finalizers(json!([])),
            "one",
            false,
            &schema,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(dropped["metadata"]["finalizers"], json!(["b.io/y"]));
    }

    #[test]
    fn status_subresource_has_its_own_entry() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}});
        let with_status = server_side_apply(
            Some(&live),
            &status,
            "weir",
            false,
            &deployment_schema(),
            T1,
            Some("status"),
        )
        .unwrap();
        assert_eq!(with_status["status"]["replicas"], 2);
        assert_eq!(
            owners(&with_status)
                .iter()
                .map(|(m, o, s, _)| (m.as_str(), o.as_str(), s.as_deref()))
                .collect::<Vec<_>>(),
            [("weir", "Apply", None), ("weir", "Apply", Some("status"))]
        );
        assert_eq!(
            owners(&with_status)[1].3,
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
        );
        assert_eq!(
            with_status["metadata"]["managedFields"][1]["subresource"],
            "status"
        );
        // The main-resource entry's next apply does not prune what the status entry owns.
        let reapplied = apply(
            Some(&with_status),
            &web_config("web:1", 2),
            "weir",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(reapplied, with_status);
    }

    #[test]
    fn null_in_the_configuration_removes_the_field_but_is_owned() {
        let mut config = web_config("web:1", 2);
        config["spec"]["paused"] = json!(true);
        let live = apply(None, &config, "weir", false, T0).unwrap();
        config["spec"]["paused"] = Value::Null;
        config["metadata"]["creationTimestamp"] = Value::Null;
        let mut live_with_system_metadata = live.clone();
        live_with_system_metadata["metadata"]["creationTimestamp"] = json!(T0);
        let applied = apply(Some(&live_with_system_metadata), &config, "weir", false, T1).unwrap();
        assert!(applied["spec"].get("paused").is_none());
        assert_eq!(applied["metadata"]["creationTimestamp"], T0);
        assert_eq!(
            fields_of(&applied, "weir", "Apply")["f:spec"]["f:paused"],
            json!({})
        );
    }

    #[test]
    fn invalid_applied_configurations_are_rejected() {
        let with_managed_fields = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "managedFields": []}});
        let missing_key =
            deployment(json!({"template": {"spec": {"containers": [{"image": "x"}]}}}));
        let duplicate = deployment(
            json!({"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}),
        );
        let cases = [
            (
                json!([1]),
                "the applied configuration must be a JSON object",
            ),
            (with_managed_fields, "metadata.managedFields must be nil"),
            (
                missing_key,
                "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)",
            ),
            (
                duplicate,
                "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name=\"a\"]",
            ),
        ];
        for (config, want) in cases {
            let error = apply(None, &config, "weir", false, T0).unwrap_err();
            assert_eq!((error.code(), error.to_string()), (400, want.to_string()));
        }
    }

    #[test]
    fn custom_resources_follow_their_schema() {
        let schema = MergeSchema::from_openapi_v3(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                           "items": {"type": "object", "properties": {"name": {"type": "string"}, "weight": {"type": "integer"}}}},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}}
        }));
        let rollout = |routes: Value, config: Value| json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}, "spec": {"routes": routes, "config": config}});
        let live = server_side_apply(
            None,
            &rollout(
                json!([{"name": "a", "weight": 100}]),
                json!({"x": {"y": 1}}),
            ),
            "gitsync",
            false,
            &schema,
            T0,
            None,
        )
        .unwrap();
        assert_eq!(
            fields_of(&live, "gitsync", "Apply")["f:spec"],
            json!({
                "f:config": {"f:x": {".": {}, "f:y": {}}},
                "f:routes": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:weight": {}}}
            })
        );
        // The rollout controller owns the weight of a route it added with an update.
        let mut weighted = live.clone();
        weighted["spec"]["routes"] =
            json!([{"name": "a", "weight": 80}, {"name": "canary", "weight": 20}]);
        record_update(
            Some(&live),
            &mut weighted,
            "weir-rollout",
            &schema,
            T1,
            None,
        );
        let error = server_side_apply(
            Some(&weighted),
            &rollout(
                json!([{"name": "a", "weight": 100}]),
                json!({"x": {"y": 1}}),
            ),
            "gitsync",
            false,
            &schema,
            T2,
            None,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"weir-rollout\" using weir.io/v1alpha1: .spec.routes[name=\"a\"].weight"
        );
        // Applying without the weight leaves both the weight and the controller's route alone.
        let applied = server_side_apply(
            Some(&weighted),
            &rollout(json!([{"name": "a"}]), json!({"x": {"y": 1}})),
            "gitsync",
            false,
            &schema,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(
            applied["spec"]["routes"],
            json!([{"name": "a", "weight": 80}, {"name": "canary", "weight": 20}])
        );
    }

    #[test]
    fn record_update_on_create_owns_every_field() {
        let mut created = web_config("web:1", 2);
        record_update(
            None,
            &mut created,
            "kubectl-create",
            &deployment_schema(),
            T0,
            None,
        );
        assert_eq!(without_managed(&created), web_config("web:1", 2));
        let entry = &created["metadata"]["managedFields"][0];
        assert_eq!(
            (
                entry["manager"].as_str(),
                entry["operation"].as_str(),
                entry["time"].as_str()
            ),
            (Some("kubectl-create"), Some("Update"), Some(T0))
        );
        assert_eq!(
            entry["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    type Edit = fn(&mut Value);

    #[test]
    fn record_update_moves_only_changed_fields() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let weir_before = FieldSet::from_fields_v1(&fields_of(&live, "weir", "Apply")).unwrap();
        let image = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}}});
        let cases: [(&str, Edit, Option<Value>); 3] = [
            ("no change: no entry", |_| {}, None),
            (
                "image change moves the image",
                |v| v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:9"),
                Some(image),
            ),
            (
                "new label is the editor's alone",
                |v| v["metadata"]["labels"]["new"] = json!("1"),
                Some(json!({"f:metadata": {"f:labels": {"f:new": {}}}})),
            ),
        ];
        for (name, edit, want) in cases {
            let mut new = live.clone();
            edit(&mut new);
            record_update(
                Some(&live),
                &mut new,
                "editor",
                &deployment_schema(),
                T1,
                None,
            );
            assert_eq!(
                fields_of(&new, "editor", "Update"),
                want.clone().unwrap_or(Value::Null),
                "{name}"
            );
            let taken = want
                .map(|want| FieldSet::from_fields_v1(&want).unwrap())
                .unwrap_or_default();
            assert_eq!(
                fields_of(&new, "weir", "Apply"),
                weir_before.difference(&taken).to_fields_v1(),
                "{name}"
            );
            assert_eq!(
                new["metadata"]["managedFields"][0]["time"], T0,
                "{name}: the applier's time is untouched"
            );
        }
    }

    #[test]
    fn record_update_drops_deleted_fields_from_every_owner() {
        let mut config = web_config("web:1", 2);
        config["metadata"]["labels"]["team"] = json!("a");
        let live = apply(None, &config, "weir", false, T0).unwrap();
        let mut edited = live.clone();
        edited["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("team");
        record_update(
            Some(&live),
            &mut edited,
            "editor",
            &deployment_schema(),
            T1,
            None,
        );
        assert_eq!(
            fields_of(&edited, "weir", "Apply")["f:metadata"],
            json!({"f:labels": {"f:app": {}}})
        );
        // Deleting alone does not make the editor an owner of anything.
        assert_eq!(owners(&edited).len(), 1);
    }

    #[test]
    fn record_update_merges_into_the_managers_previous_entry() {
        let mut created = web_config("web:1", 2);
        record_update(None, &mut created, "ctl", &deployment_schema(), T0, None);
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        record_update(
            Some(&created),
            &mut scaled,
            "ctl",
            &deployment_schema(),
            T1,
            None,
        );
        assert_eq!(owners(&scaled).len(), 1);
        assert_eq!(scaled["metadata"]["managedFields"][0]["time"], T1);
        assert_eq!(
            fields_of(&scaled, "ctl", "Update"),
            fields_of(&created, "ctl", "Update")
        );
    }

    #[test]
    fn record_update_honours_managed_fields_in_the_request() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let cases = [
            // A replace of a fetched object carries the stored entries along.
            ("fetched copy", live["metadata"]["managedFields"].clone(), 1),
            // `[{}]` clears them (the documented reset).
            ("reset", json!([{}]), 0),
            // An empty list means "not sent": the stored entries stay.
            ("empty list", json!([]), 1),
        ];
        for (name, sent, want) in cases {
            let mut new = live.clone();
            new["metadata"]["managedFields"] = sent;
            record_update(
                Some(&live),
                &mut new,
                "replacer",
                &deployment_schema(),
                T1,
                None,
            );
            assert_eq!(owners(&new).len(), want, "{name}");
        }
        // Through a subresource the request's entries are ignored.
        let mut status = live.clone();
        status["metadata"]["managedFields"] = json!([{}]);
        status["status"] = json!({"replicas": 2});
        record_update(
            Some(&live),
            &mut status,
            "controller",
            &deployment_schema(),
            T1,
            Some("status"),
        );
        assert_eq!(owners(&status).len(), 2);
    }

    #[test]
    fn updates_through_status_record_a_status_entry() {
        let live = apply(None, &web_config("web:1", 2), "weir", false, T0).unwrap();
        let mut status = live.clone();
        status["status"] =
            json!({"readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]});
        record_update(
            Some(&live),
            &mut status,
            "weir-emulator",
            &deployment_schema(),
            T1,
            Some("status"),
        );
        let entry = &status["metadata"]["managedFields"][1];
        assert_eq!(entry["subresource"], "status");
        assert_eq!(
            entry["fieldsV1"],
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:readyReplicas": {}}})
        );
    }
}
