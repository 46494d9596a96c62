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
