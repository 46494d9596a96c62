//! The kubeconfig the emulator writes for its clients.

use std::path::Path;

/// Name of the cluster, context and user in the written kubeconfig.
pub const CONTEXT: &str = "weir-emulator";

/// A kubeconfig pointing at `server` with no credentials (the emulator does not authenticate).
pub fn render(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {CONTEXT}\n  cluster:\n    server: {server}\ncontexts:\n- name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}\n    namespace: default\ncurrent-context: {CONTEXT}\nusers:\n- name: {CONTEXT}\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// Writes the kubeconfig, creating parent directories.
pub fn write(path: &Path, server: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, render(server))
}
