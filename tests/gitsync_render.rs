//! Rendering a GitSync's path from a real directory tree: plain YAML, kustomize (real
//! `kubectl kustomize`), and hostile repositories.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::TempDir;
use weir::gitsync::render::{
    ANNOTATION_SOURCE, KustomizeCommand, LABEL_GITSYNC_NAME, RenderError, RenderOptions,
    RenderedObject, render,
};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

fn options() -> RenderOptions {
    RenderOptions::new("team", "apps")
}

/// `Kind namespace/name @ source#line` for each object, in order.
fn summary(objects: &[RenderedObject]) -> Vec<String> {
    objects
        .iter()
        .map(|entry| {
            let metadata = &entry.object["metadata"];
            let namespace = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .map(|namespace| format!("{namespace}/"))
                .unwrap_or_default();
            format!(
                "{} {namespace}{} @ {}#{}",
                entry.object["kind"].as_str().unwrap(),
                metadata["name"].as_str().unwrap(),
                entry.source,
                entry.line
            )
        })
        .collect()
}

async fn render_error(root: &Path, path: &str, opts: &RenderOptions) -> RenderError {
    match render(root, path, opts).await {
        Ok(objects) => panic!("expected an error, got {:?}", summary(&objects)),
        Err(error) => error,
    }
}

const CONFIG_MAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n";

#[tokio::test]
async fn plain_directories_render_recursively_in_path_order() {
    let repo = TempDir::new("render-plain");
    write(
        repo.path(),
        &[
            ("apps/b.yaml", CONFIG_MAP),
            (
                "apps/a/deploy.yml",
                "# web\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n",
            ),
            (
                "apps/a/list.json",
                "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n  {\"apiVersion\": \"v1\", \"kind\": \"ServiceAccount\", \"metadata\": {\"name\": \"one\"}},\n  {\"apiVersion\": \"v1\", \"kind\": \"ServiceAccount\", \"metadata\": {\"name\": \"two\"}}\n]}\n",
            ),
            (
                "apps/z/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: extra\n",
            ),
            (
                "apps/crds/widget.yaml",
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n",
            ),
            (
                "apps/z/widget.yaml",
                "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: extra\n",
            ),
            ("apps/.github/workflow.yaml", "not: a manifest\n"),
            ("apps/.hidden.yaml", "not: a manifest\n"),
            ("apps/README.md", "# not yaml\n"),
            ("apps/a/notes.txt", "ignored"),
            ("other/c.yaml", "broken: [\n"),
        ],
    );
    let objects = render(repo.path(), "apps", &options()).await.unwrap();
    assert_eq!(
        summary(&objects),
        [
            "CustomResourceDefinition widgets.example.com @ apps/crds/widget.yaml#1",
            "Namespace extra @ apps/z/ns.yaml#1",
            "Deployment team/web @ apps/a/deploy.yml#3",
            "Service team/web @ apps/a/deploy.yml#10",
            "ServiceAccount team/one @ apps/a/list.json#2",
            "ServiceAccount team/two @ apps/a/list.json#3",
            "ConfigMap team/settings @ apps/b.yaml#1",
            "Widget extra/w @ apps/z/widget.yaml#1",
        ]
    );
    let configmap = &objects[6].object;
    assert_eq!(configmap["data"]["mode"], "fast");
    assert_eq!(
        configmap["metadata"]["annotations"][ANNOTATION_SOURCE],
        "apps/b.yaml#L1"
    );
    assert_eq!(configmap["metadata"]["labels"][LABEL_GITSYNC_NAME], "apps");

    // A single file can be the path too; a timeout too long to represent is no timeout.
    let mut opts = options();
    opts.timeout = Duration::MAX;
    let objects = render(repo.path(), "./apps/b.yaml", &opts).await.unwrap();
    assert_eq!(
        summary(&objects),
        ["ConfigMap team/settings @ apps/b.yaml#1"]
    );
}

#[tokio::test]
async fn target_namespace_fills_namespaced_objects_only() {
    let repo = TempDir::new("render-namespace");
    write(
        repo.path(),
        &[(
            "all.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: pinned}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n",
        )],
    );
    let mut opts = options();
    opts.target_namespace = Some("prod".to_owned());
    let objects = render(repo.path(), "", &opts).await.unwrap();
    assert_eq!(
        summary(&objects),
        [
            "Namespace prod @ all.yaml#13",
            "ConfigMap prod/a @ all.yaml#1",
            "ConfigMap pinned/b @ all.yaml#5",
            "ClusterRole reader @ all.yaml#9",
        ]
    );
}

#[tokio::test]
async fn render_errors_name_the_file_and_line() {
    let repo = TempDir::new("render-errors");
    write(
        repo.path(),
        &[
            ("bad/ok.yaml", CONFIG_MAP),
            (
                "bad/web.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n    port: 80\n",
            ),
            (
                "nokind/x.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\napiVersion: v1\nmetadata: {name: b}\n",
            ),
            ("nested/app.yaml", CONFIG_MAP),
            ("nested/base/kustomization.yaml", "resources: [cm.yaml]\n"),
            ("nested/base/cm.yaml", CONFIG_MAP),
        ],
    );
    let cases = [
        ("bad", "bad/web.yaml", 10, "bad/web.yaml:10:"),
        (
            "nokind",
            "nokind/x.yaml",
            6,
            "nokind/x.yaml:6: object has no kind",
        ),
        (
            "nested",
            "nested/base/kustomization.yaml",
            0,
            "nested/base/kustomization.yaml: kustomization below",
        ),
        ("missing", "missing", 0, "missing: No such file"),
    ];
    for (path, file, line, shown) in cases {
        let error = render_error(repo.path(), path, &options()).await;
        assert_eq!(error.file_line(), Some((file.to_owned(), line)), "{error}");
        assert!(error.to_string().starts_with(shown), "{error}");
    }
}

const BASE_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";

fn kustomize_repo(tag: &str) -> TempDir {
    let repo = TempDir::new(tag);
    write(
        repo.path(),
        &[
            (
                "base/kustomization.yaml",
                "resources:\n- deploy.yaml\n- ns.yaml\n",
            ),
            ("base/deploy.yaml", BASE_DEPLOYMENT),
            (
                "base/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
            ),
            (
                "overlays/prod/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: prod-\nresources:\n- ../../base\npatches:\n- path: replicas.yaml\n",
            ),
            (
                "overlays/prod/replicas.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n",
            ),
        ],
    );
    repo
}

#[tokio::test]
async fn kustomize_builds_an_overlay() {
    let repo = kustomize_repo("render-kustomize");
    let objects = render(repo.path(), "overlays/prod", &options())
        .await
        .unwrap();
    assert_eq!(
        summary(&objects),
        [
            // kustomize leaves Namespace names alone.
            "Namespace web @ overlays/prod/kustomization.yaml#0",
            "Deployment team/prod-web @ overlays/prod/kustomization.yaml#0",
        ]
    );
    let deployment = &objects[1].object;
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["metadata"]["annotations"][ANNOTATION_SOURCE],
        "overlays/prod/kustomization.yaml"
    );
}

#[tokio::test]
async fn kustomize_errors_name_the_kustomization() {
    let repo = kustomize_repo("render-kustomize-errors");
    write(
        repo.path(),
        &[
            (
                "unknown/kustomization.yaml",
                "resources:\n- ../base\nnamPrefix: typo-\n",
            ),
            ("via-base/kustomization.yaml", "resources:\n- ../unknown\n"),
            (
                "missing/kustomization.yaml",
                "resources:\n- ../base\n- nothere.yaml\n",
            ),
            (
                "missing-patch/kustomization.yaml",
                "resources:\n- ../base\npatches:\n- path: nope.yaml\n",
            ),
            (
                "escape/kustomization.yaml",
                "resources:\n- ../base\n- ../../../../etc\n",
            ),
            (
                "remote/kustomization.yaml",
                "resources:\n- https://github.com/org/repo//deploy?ref=v1\n",
            ),
            ("badyaml/kustomization.yaml", "resources:\n- broken.yaml\n"),
            (
                "badyaml/broken.yaml",
                "apiVersion: v1\nkind: ConfigMap\n  name: x\n",
            ),
            ("badkust/kustomization.yaml", "resources: [\n"),
        ],
    );
    let cases = [
        ("unknown", "unknown/kustomization.yaml", 3, "namPrefix"),
        ("via-base", "unknown/kustomization.yaml", 3, "namPrefix"),
        (
            "missing",
            "missing/kustomization.yaml",
            3,
            "\"nothere.yaml\" does not exist",
        ),
        (
            "missing-patch",
            "missing-patch/kustomization.yaml",
            4,
            "\"nope.yaml\" does not exist",
        ),
        (
            "escape",
            "escape/kustomization.yaml",
            3,
            "outside the repository",
        ),
        ("remote", "remote/kustomization.yaml", 2, "is remote"),
        ("badyaml", "badyaml/broken.yaml", 3, "invalid YAML"),
        ("badkust", "badkust/kustomization.yaml", 1, "invalid YAML"),
    ];
    for (path, file, line, message) in cases {
        let error = render_error(repo.path(), path, &options()).await;
        let shown = error.to_string();
        assert_eq!(error.file_line(), Some((file.to_owned(), line)), "{shown}");
        assert!(shown.starts_with(&format!("{file}:{line}")), "{shown}");
        assert!(shown.contains(message), "{shown}");
        assert!(
            !shown.contains(&repo.path().display().to_string()),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn paths_outside_the_checkout_are_refused() {
    let repo = TempDir::new("render-escape");
    write(repo.path(), &[("apps/cm.yaml", CONFIG_MAP)]);
    std::os::unix::fs::symlink("/etc", repo.path().join("etc-link")).unwrap();
    for path in ["../x", "apps/../../x", "/etc", "etc-link"] {
        let error = render_error(repo.path(), path, &options()).await;
        assert!(
            matches!(error, RenderError::PathEscapes { .. }),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn symlinks_out_of_the_checkout_are_refused_and_never_read() {
    let outside = TempDir::new("render-outside");
    let fifo = outside.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let repo = TempDir::new("render-symlinks");
    write(
        repo.path(),
        &[
            ("passwd/cm.yaml", CONFIG_MAP),
            ("pipe/cm.yaml", CONFIG_MAP),
            ("inside/real/cm.yaml", CONFIG_MAP),
        ],
    );
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("passwd/passwd.yaml")).unwrap();
    // Opening a FIFO blocks until a writer shows up, so reading it would hang this test.
    std::os::unix::fs::symlink(&fifo, repo.path().join("pipe/secrets.yaml")).unwrap();
    std::os::unix::fs::symlink("real", repo.path().join("inside/linked")).unwrap();
    std::os::unix::fs::symlink("..", repo.path().join("inside/real/loop")).unwrap();
    std::os::unix::fs::symlink("gone.yaml", repo.path().join("inside/dangling.yaml")).unwrap();

    let cases = [
        ("passwd", "passwd/passwd.yaml", "/etc/passwd"),
        ("pipe", "pipe/secrets.yaml", fifo.to_str().unwrap()),
    ];
    for (path, link, target) in cases {
        let started = Instant::now();
        let error = render_error(repo.path(), path, &options()).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            error.to_string(),
            format!("{link}: symlink to {target} points outside the repository")
        );
    }

    // Symlinks that stay inside are followed, each directory once.
    let objects = render(repo.path(), "inside", &options()).await.unwrap();
    assert_eq!(
        summary(&objects),
        [
            "ConfigMap team/settings @ inside/linked/cm.yaml#1",
            // `real` is reached through `linked` first; the loop back to `inside` ends there.
        ]
    );

    // A kustomization cannot reach outside through a symlink either.
    write(
        repo.path(),
        &[("kust/kustomization.yaml", "resources:\n- passwd.yaml\n")],
    );
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("kust/passwd.yaml")).unwrap();
    let error = render_error(repo.path(), "kust", &options()).await;
    assert_eq!(
        error.to_string(),
        "kust/kustomization.yaml:2: \"passwd.yaml\" resolves outside the repository"
    );
}

#[tokio::test]
async fn oversized_input_is_refused_before_it_is_read() {
    let repo = TempDir::new("render-huge");
    write(repo.path(), &[("apps/cm.yaml", CONFIG_MAP)]);
    // Sparse: 16 GiB on paper, nothing on disk. Reading it would take minutes.
    let huge = fs::File::create(repo.path().join("apps/huge.yaml")).unwrap();
    huge.set_len(16 << 30).unwrap();
    let started = Instant::now();
    let error = render_error(repo.path(), "apps", &options()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        error.to_string(),
        format!(
            "apps/huge.yaml: {} bytes is over the limit of 1048576 bytes per file",
            16u64 << 30
        )
    );

    // Many files within the per-file limit still hit the total.
    let repo = TempDir::new("render-total");
    let big = format!("{CONFIG_MAP}  padding: \"{}\"\n", "x".repeat(600));
    for index in 0..4 {
        write(
            repo.path(),
            &[(
                &format!("{index}.yaml"),
                &big.replace("settings", &format!("s{index}")),
            )],
        );
    }
    let mut opts = options();
    opts.max_total_bytes = 2000;
    let error = render_error(repo.path(), "", &opts).await;
    assert!(
        matches!(error, RenderError::TotalTooLarge { ref file, .. } if file == "2.yaml"),
        "{error}"
    );

    // Too many objects.
    let many: String = (0..30)
        .map(|index| {
            format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{index}}}\n")
        })
        .collect();
    write(repo.path(), &[("many/all.yaml", &many)]);
    opts = options();
    opts.max_objects = 20;
    let error = render_error(repo.path(), "many", &opts).await;
    assert!(
        matches!(
            error,
            RenderError::TooMany {
                count: 21,
                limit: 20
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn deep_nesting_and_yaml_bombs_are_refused() {
    let repo = TempDir::new("render-bombs");
    let mut laughs = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    let mut previous = 'a';
    for name in 'b'..='j' {
        let refs = vec![format!("*{previous}"); 9].join(", ");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
        previous = name;
    }
    write(
        repo.path(),
        &[
            ("flow/deep.yaml", &"[".repeat(10_000)),
            (
                "block/deep.yaml",
                &(0..1_000)
                    .map(|depth| format!("{}k:\n", " ".repeat(depth)))
                    .collect::<String>(),
            ),
            ("laughs/lol.yaml", &laughs),
            ("kustomize/kustomization.yaml", "resources:\n- deep.yaml\n"),
            (
                "kustomize/deep.yaml",
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {}",
                    "[".repeat(10_000)
                ),
            ),
        ],
    );
    let cases = [
        ("flow", "flow/deep.yaml:1: nested deeper than 64 levels"),
        ("block", "block/deep.yaml:65: nested deeper than 64 levels"),
        ("laughs", "laughs/lol.yaml:"),
        (
            "kustomize",
            "kustomize/deep.yaml:4: nested deeper than 64 levels",
        ),
    ];
    for (path, shown) in cases {
        let started = Instant::now();
        let error = render_error(repo.path(), path, &options()).await;
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
        assert!(error.to_string().starts_with(shown), "{error}");
    }
}

/// A stand-in for kustomize, written as a shell script.
fn fake_kustomize(dir: &Path, script: &str) -> KustomizeCommand {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-kustomize");
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    KustomizeCommand::Kustomize(path)
}

#[tokio::test]
async fn kustomize_is_bounded_in_time_and_output() {
    let repo = kustomize_repo("render-kustomize-bounds");
    let tools = TempDir::new("render-tools");

    let mut opts = options();
    opts.kustomize = fake_kustomize(tools.path(), "exec sleep 30");
    opts.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = render_error(repo.path(), "overlays/prod", &opts).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, RenderError::Timeout { .. }), "{error}");

    let mut opts = options();
    opts.kustomize = fake_kustomize(tools.path(), "exec yes 'a: b'");
    opts.max_total_bytes = 100_000;
    let error = render_error(repo.path(), "overlays/prod", &opts).await;
    assert!(
        matches!(error, RenderError::TotalTooLarge { ref file, .. } if file == "overlays/prod/kustomization.yaml"),
        "{error}"
    );

    let mut opts = options();
    opts.kustomize = fake_kustomize(tools.path(), "echo 'Error: it broke' >&2; exit 1");
    let error = render_error(repo.path(), "overlays/prod", &opts).await;
    assert_eq!(
        error.to_string(),
        "overlays/prod/kustomization.yaml: kustomize failed: it broke"
    );
}
