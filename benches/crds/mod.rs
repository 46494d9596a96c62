//! Installing the CustomResourceDefinitions a bench's emulator needs, through the API (no kubectl,
//! so the time goes to what the bench measures).
//!
//! A bench includes it with `mod crds;`; being a directory, Cargo does not take it for a bench.
// Each bench uses only some of it.
#![allow(dead_code)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

/// Whether the test CRDs for HTTPRoute and VirtualService (`e2e/crds`) go in next to weir's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TestCrds {
    Included,
    Excluded,
}

/// Server-side applies weir's CRDs (and, when `test` says so, those in `e2e/crds`) as field
/// manager `bench`; panics naming the CRD that the API refused.
pub async fn install(client: &kube::Client, test: TestCrds) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds = weir::api::crds::all();
    if test == TestCrds::Included {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/crds");
        for entry in std::fs::read_dir(&dir).expect("e2e/crds") {
            let path = entry.expect("e2e/crds entry").path();
            let yaml = std::fs::read_to_string(&path).expect("read CRD");
            crds.push(
                serde_saphyr::from_str(&yaml)
                    .unwrap_or_else(|e| panic!("parse {}: {e}", path.display())),
            );
        }
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("install CRD {name}: {e}"));
    }
}
