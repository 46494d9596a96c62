//! Fails when the committed CRDs in `crds/` differ from what `weir::api::crds` generates.
//!
//! Regenerate with `cargo run -- crds --out crds/`, or
//! `WEIR_UPDATE_CRDS=1 cargo test --test crds_fresh`.

use std::collections::BTreeSet;
use std::path::PathBuf;

const REGENERATE: &str = "regenerate with `cargo run -- crds --out crds/` \
     or `WEIR_UPDATE_CRDS=1 cargo test --test crds_fresh`";

#[test]
fn crds_directory_matches_the_generated_crds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = weir::api::crds::files().unwrap();

    if std::env::var_os("WEIR_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for path in weir::api::crds::write_dir(&dir).unwrap() {
            eprintln!("wrote {}", path.display());
        }
    }

    let mut problems = Vec::new();
    for file in &files {
        let path = dir.join(&file.file_name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == file.yaml => {}
            Ok(_) => problems.push(format!("{} is out of date", path.display())),
            Err(error) => problems.push(format!("{} cannot be read: {error}", path.display())),
        }
    }

    // A CRD weir no longer generates must not linger where users install CRDs from.
    let generated: BTreeSet<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("weir.io_")
                && name.ends_with(".yaml")
                && !generated.contains(name.as_str())
            {
                problems.push(format!(
                    "{} is no longer generated; delete it",
                    dir.join(&name).display()
                ));
            }
        }
    }

    assert!(problems.is_empty(), "{}\n{REGENERATE}", problems.join("\n"));
}

/// The hand-written third-party CRDs the emulator and the e2e tests install must be ones a real
/// API server would accept, and must carry the fields weir's traffic routers patch.
#[test]
fn e2e_test_crds_are_structural() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/crds");
    let cases = [
        (
            "gateway.networking.k8s.io_httproutes.yaml",
            "httproutes.gateway.networking.k8s.io",
            "/properties/spec/properties/rules/items/properties/backendRefs/items/properties/weight",
        ),
        (
            "networking.istio.io_virtualservices.yaml",
            "virtualservices.networking.istio.io",
            "/properties/spec/properties/http/items/properties/route/items/properties/weight",
        ),
    ];
    for (file, name, weight) in cases {
        let yaml = std::fs::read_to_string(dir.join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(crd.metadata.name.as_deref(), Some(name));
        assert_eq!(
            weir::api::crds::structural_problems(&crd),
            Vec::<String>::new(),
            "{file}"
        );
        let version = crd.spec.versions.first().unwrap();
        assert_eq!(version.name, "v1", "{file}");
        let subresources = version.subresources.as_ref().unwrap();
        assert!(
            subresources.status.is_some(),
            "{file} has no status subresource"
        );
        let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
        let weight = schema["openAPIV3Schema"].pointer(weight).unwrap();
        assert_eq!(weight["type"], "integer", "{file}");
    }
}
