//! The pod-template hash that names a revision: its ReplicaSet, its pods' label, and `stableRS`.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// Label carrying the pod-template hash on ReplicaSets, pods and pinned Service selectors.
pub const POD_TEMPLATE_HASH_LABEL: &str = "weir.io/pod-template-hash";

/// Same alphabet as Kubernetes' `SafeEncodeString`: no vowels, so no accidental words.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a (32-bit) over the template's canonical JSON, encoded like a Deployment's hash.
///
/// serde_json objects are sorted maps, so equal templates always serialize the same way. The hash
/// label itself is excluded, so hashing a template that already carries it gives the same value.
pub fn pod_template_hash(template: &PodTemplateSpec) -> String {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    let canonical = value.to_string();
    encode(crate::fnv::fnv1a_32(canonical.bytes()))
}

fn encode(mut n: u32) -> String {
    let mut out = String::new();
    while n > 0 {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}})).unwrap()
    }

    #[test]
    fn equal_templates_hash_equal_and_changes_change_it() {
        assert_eq!(
            pod_template_hash(&template("a:1")),
            pod_template_hash(&template("a:1"))
        );
        assert_ne!(
            pod_template_hash(&template("a:1")),
            pod_template_hash(&template("a:2"))
        );
    }

    #[test]
    fn the_hash_label_does_not_change_the_hash() {
        let mut t = template("a:1");
        let h = pod_template_hash(&t);
        t.metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), h.clone());
        assert_eq!(pod_template_hash(&t), h);
    }

    #[test]
    fn hashes_are_valid_label_values() {
        let h = pod_template_hash(&template("x"));
        assert!(!h.is_empty() && h.len() <= 7);
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)));
    }
}
