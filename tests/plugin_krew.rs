//! The krew manifest installs `kubectl weir` on every platform a release builds for.

mod support;

use serde_json::Value;

#[test]
fn krew_manifest_names_the_plugin_binary_on_every_platform() {
    let text =
        std::fs::read_to_string(support::repo_root().join("plugins/krew/weir.yaml")).unwrap();
    let manifest: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    // krew installs plugin NAME as `kubectl NAME`.
    assert_eq!(manifest["metadata"]["name"], "weir");
    assert_eq!(manifest["spec"]["version"], "v{{VERSION}}");
    let platforms = manifest["spec"]["platforms"].as_array().unwrap();
    let mut seen = Vec::new();
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        seen.push(format!("{os}/{arch}"));
        let bin = if os == "windows" {
            "kubectl-weir.exe"
        } else {
            "kubectl-weir"
        };
        assert_eq!(p["bin"], bin, "{os}/{arch}");
        assert!(
            p["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["from"] == bin),
            "{os}/{arch} ships {bin}"
        );
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.contains("{{VERSION}}") && uri.contains(&format!("{os}_{arch}")),
            "{uri}"
        );
        let sha = p["sha256"].as_str().unwrap();
        assert_eq!(
            sha,
            format!(
                "{{{{SHA256_{}_{}}}}}",
                os.to_uppercase(),
                arch.to_uppercase()
            )
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "darwin/amd64",
            "darwin/arm64",
            "linux/amd64",
            "linux/arm64",
            "windows/amd64"
        ]
    );
}
