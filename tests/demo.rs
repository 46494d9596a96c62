//! `weir demo`, the README's first command, as a user runs it: the whole story happens, with
//! Prometheus and without it, and the exit code says so.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::TempDir;

async fn demo(path_env: &std::ffi::OsStr) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("demo")
            .env("PATH", path_env)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("weir demo finished")
    .expect("run weir demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

fn assert_story(output: &str) {
    for line in [
        "act 1: commit web 1.0",
        "act 2: commit web 2.0",
        "traffic: 25% canary, 75% stable",
        "act 3: commit web 3.0",
        "chat alert: Rolled back: default/web",
        "This reverts commit",
        "chat alert: Reverted in Git: default/web",
        "the whole story happened as expected",
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_the_whole_story_with_prometheus() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let has_prometheus = std::env::split_paths(&path).any(|d| d.join("prometheus").is_file());
    assert!(
        has_prometheus,
        "this test needs prometheus on PATH (apt-get install -y prometheus; ./scripts/test.sh does it)"
    );
    let (ok, output) = demo(&path).await;
    assert!(ok, "weir demo failed:\n{output}");
    assert!(output.contains("metrics: Prometheus at"), "{output}");
    assert!(output.contains("p99-latency"), "{output}");
    assert_story(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prometheus_the_demo_reads_the_apps_json_and_says_how_to_install_it() {
    // A PATH with git and nothing else: no prometheus to find.
    let dir = TempDir::new("demo-no-prom");
    let git = which("git");
    std::os::unix::fs::symlink(&git, dir.path().join("git")).unwrap();
    let (ok, output) = demo(dir.path().as_os_str()).await;
    assert!(ok, "weir demo failed:\n{output}");
    assert!(output.contains("apt-get install -y prometheus"), "{output}");
    assert_story(&output);
}

fn which(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}
