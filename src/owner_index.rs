//! Which cached objects each owner has, so that a reconcile finds its own ReplicaSets among
//! thousands without scanning them all.
//!
//! Scanning the whole ReplicaSet cache on every reconcile made each one cost O(cluster): with 1,000
//! canaries stepping, comparing namespaces and owner uids of every cached ReplicaSet was the largest
//! single cost in weir's profile. The index is fed by the same watch events as the cache. It may
//! hold more than the truth (an object whose deletion a relist skipped), never less: every lookup
//! is checked against the cache, and what the cache no longer has is dropped from the index.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// An object's namespace and name.
type Id = (String, String);

/// owner uid → the objects that name it in their ownerReferences.
#[derive(Clone, Default, Debug)]
pub struct OwnerIndex(Arc<Mutex<HashMap<String, HashSet<Id>>>>);

impl OwnerIndex {
    /// Passes a watch's events through, indexing each object under its owners.
    pub fn track<K, E, S>(
        &self,
        stream: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, E>> + use<K, E, S>
    where
        K: Resource,
        S: Stream<Item = Result<watcher::Event<K>, E>>,
    {
        let index = self.clone();
        stream.inspect(move |event| match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => index.add(obj),
            Ok(watcher::Event::Delete(obj)) => index.remove(obj),
            _ => {}
        })
    }

    fn add<K: Resource>(&self, obj: &K) {
        let id = id_of(obj);
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for owner in obj.meta().owner_references.iter().flatten() {
            map.entry(owner.uid.clone()).or_default().insert(id.clone());
        }
    }

    fn remove<K: Resource>(&self, obj: &K) {
        let id = id_of(obj);
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for owner in obj.meta().owner_references.iter().flatten() {
            if let Some(set) = map.get_mut(&owner.uid) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(&owner.uid);
                }
            }
        }
    }

    /// The cached objects owned by `owner_uid`, in name order.
    pub fn owned<K>(&self, store: &Store<K>, owner_uid: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ids) = map.get_mut(owner_uid) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        ids.retain(|(ns, name)| {
            let obj = store.get(&ObjectRef::new(name).within(ns));
            let owned = obj.as_ref().is_some_and(|o| {
                o.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == owner_uid)
            });
            if owned {
                found.extend(obj);
            }
            owned
        });
        if ids.is_empty() {
            map.remove(owner_uid);
        }
        found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        found
    }
}

fn id_of<K: Resource>(obj: &K) -> Id {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector;

    fn rs(name: &str, owner: &str) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some(name.into());
        rs.metadata.namespace = Some("default".into());
        rs.metadata.owner_references = Some(vec![OwnerReference {
            uid: owner.into(),
            ..Default::default()
        }]);
        rs
    }

    #[tokio::test]
    async fn finds_an_owners_objects_and_drops_what_the_cache_no_longer_has() {
        let (reader, writer) = reflector::store::<ReplicaSet>();
        let index = OwnerIndex::default();
        let events = vec![
            watcher::Event::Init,
            watcher::Event::InitApply(rs("web-b", "web")),
            watcher::Event::InitApply(rs("web-a", "web")),
            watcher::Event::InitApply(rs("api-a", "api")),
            watcher::Event::InitDone,
            watcher::Event::Delete(rs("api-a", "api")),
        ];
        index
            .track(reflector::reflector(
                writer,
                futures::stream::iter(events.into_iter().map(Ok::<_, watcher::Error>)),
            ))
            .for_each(|_| async {})
            .await;
        let names = |uid: &str| -> Vec<String> {
            index
                .owned(&reader, uid)
                .iter()
                .map(|r| r.metadata.name.clone().unwrap_or_default())
                .collect()
        };
        assert_eq!(names("web"), ["web-a", "web-b"]);
        assert!(names("api").is_empty(), "deleted");
        assert!(names("nobody").is_empty());

        // An object the index still names but the cache lost (a relist skipped its deletion).
        index.add(&rs("web-c", "web"));
        assert_eq!(names("web"), ["web-a", "web-b"]);
        assert_eq!(index.0.lock().unwrap()["web"].len(), 2, "web-c dropped");
    }
}
