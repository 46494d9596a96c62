//! Fuzzing of the places where weir reads input it does not control: the manifest loader and
//! renderer (files from Git), CEL conditions and the values they judge (a template's author and a
//! metrics backend), the emulator's patch handlers (any API client), and the route weight math
//! (routes other people edit, steps users write).
//!
//! Each property runs a bounded number of generated cases from a fixed seed, so
//! `cargo test --test fuzz` is a short, repeatable run (under a minute in the debug build).
//! `PROPTEST_CASES=N` runs every property N times from a random seed for the long run, e.g.
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz` (see README, Fuzzing).
//! A failure prints the shrunk input. Every crash the properties found is kept below as a named
//! regression test (`regression_*`), so it stays covered whatever the generator draws.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use support::{Cluster, TempDir};
use weir::analysis::assessment::{Observation, judge};
use weir::analysis::condition::Condition;
use weir::analysis::value::MetricValue;
use weir::api::AnalysisPhase;
use weir::api::analysis::Metric;
use weir::gitsync::render::{RenderError, RenderOptions, render};
use weir::rollout::{Action, Observed, ObservedReplicaSet, ServiceState, TrafficState};
use weir::traffic::{Backends, Weights, gateway_api, istio};

/// Runs `property` over `strategy`: `default_cases` cases from a fixed seed, so that the short run
/// in CI is the same every time, or `PROPTEST_CASES` cases from a random seed (or from
/// `PROPTEST_RNG_SEED`) for the long run. Failures are not written to a regressions file: the ones
/// worth keeping become named tests.
fn check<S: Strategy>(
    default_cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    // `Config::default()` reads the PROPTEST_* variables.
    let mut config = Config {
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            config.rng_seed = RngSeed::Fixed(SHORT_RUN_SEED);
        }
    }
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, property) {
        panic!("{failure}");
    }
}

/// Seed of the short run.
const SHORT_RUN_SEED: u64 = 0x5745_4952;

/// Any JSON value, nested up to `depth` levels, with keys drawn from `keys` so that generated
/// documents hit the fields code looks at.
fn json_value(depth: u32, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        prop::sample::select(keys).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(keys).prop_map(str::to_owned), ".{0,8}"],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Manifest loader and renderer.

const MANIFEST_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "items",
    "List",
    "ConfigMap",
    "v1",
    "data",
    "spec",
];

const VALID_MANIFEST: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata:\n  mode: &m fast\n  again: *m\n---\nkind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";

/// Text that looks enough like YAML to get past the first character: YAML's indicators,
/// anchors, tags, document markers and indentation, in any order.
fn yaml_like() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(
        &[
            "- ",
            ": ",
            "? ",
            "[",
            "]",
            "{",
            "}",
            ", ",
            "&a ",
            "*a",
            "&b ",
            "*b",
            "!!str ",
            "!!map ",
            "!tag ",
            "|\n",
            ">-\n",
            "'",
            "\"",
            "\\",
            "# c",
            "\n",
            "\n  ",
            "\n    ",
            "---\n",
            "...\n",
            "%YAML 1.2\n",
            "apiVersion: v1",
            "kind: ConfigMap",
            "metadata:",
            "name: x",
            "items:",
            "kind: List",
            "<<: *a",
            "0o17",
            "0x1F",
            "1e400",
            ".nan",
            "~",
            "null",
            "\t",
            "\u{feff}",
            "é",
            "\u{0}",
            "\r\n",
        ][..],
    );
    prop::collection::vec(tokens, 0..80).prop_map(|parts| parts.concat())
}

/// A valid manifest with a few bytes inserted, replaced or cut.
fn mutated_manifest() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    prop::collection::vec(edit, 1..8).prop_map(|edits| {
        let mut bytes = VALID_MANIFEST.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let at = at.index(bytes.len() + 1);
            match how {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => bytes[at] = byte,
                _ => bytes.truncate(at.max(1)),
            }
        }
        bytes
    })
}

/// What a hostile file can hold: arbitrary bytes, YAML-like noise, mangled manifests, and
/// arbitrary documents nested past the depth limit (as JSON, which is YAML).
fn manifest_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        yaml_like().prop_map(String::into_bytes),
        mutated_manifest(),
        json_value(6, MANIFEST_KEYS).prop_map(|v| v.to_string().into_bytes()),
        (
            1usize..200,
            prop::sample::select(&["[", "{a: ", "- ", "a:\n "][..])
        )
            .prop_map(|(depth, open)| open.repeat(depth).into_bytes()),
    ]
}

/// The checks every render of a hostile file must pass, whatever the file holds.
fn render_is_total(repo: &Path, file: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    fs::create_dir_all(repo.join("apps")).unwrap();
    fs::write(repo.join("apps").join(file), bytes).unwrap();
    let mut opts = RenderOptions::new("team", "apps");
    // Small limits, so that generated inputs reach them.
    opts.max_nodes = 5_000;
    opts.max_objects = 50;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(render(repo, "apps", &opts)) {
        Ok(objects) => {
            prop_assert!(objects.len() <= opts.max_objects);
            for rendered in &objects {
                let object = &rendered.object;
                for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
                    prop_assert!(
                        object.pointer(pointer).and_then(Value::as_str).is_some(),
                        "{pointer} missing from {object}"
                    );
                }
                prop_assert_eq!(&rendered.source, &format!("apps/{file}"));
                prop_assert_eq!(
                    object.pointer("/metadata/annotations/weir.io~1gitsync"),
                    Some(&json!("team/apps"))
                );
            }
        }
        // A panic in the blocking parser task comes back as this error rather than unwinding.
        Err(error @ RenderError::Task(_)) => {
            return Err(TestCaseError::fail(format!("the parser panicked: {error}")));
        }
        Err(error) => {
            let shown = error.to_string();
            prop_assert!(!shown.is_empty());
            prop_assert!(
                !shown.contains(&repo.display().to_string()),
                "the message leaks the checkout path: {shown}"
            );
            if let Some((named, _)) = error.file_line() {
                prop_assert_eq!(named, format!("apps/{file}"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_manifest_loader_never_panics_and_names_the_file() {
    let repo = TempDir::new("fuzz-render");
    check(600, manifest_bytes(), |bytes| {
        render_is_total(repo.path(), "input.yaml", &bytes)
    });
}

#[test]
fn json_manifests_are_loaded_with_the_same_limits() {
    let repo = TempDir::new("fuzz-render-json");
    check(150, manifest_bytes(), |bytes| {
        render_is_total(repo.path(), "input.json", &bytes)
    });
}

#[test]
fn nesting_past_the_depth_limit_is_refused_in_every_collection_style() {
    let repo = TempDir::new("fuzz-render-deep");
    let styles = prop::sample::select(&["flow-seq", "flow-map", "block-seq", "block-map"][..]);
    // Up to 700 levels keeps even the block styles under the 1 MiB file limit.
    check(60, (65usize..700, styles), |(depth, style)| {
        let nested = match style {
            "flow-seq" => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
            "flow-map" => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
            "block-seq" => (0..depth)
                .map(|d| format!("{}-\n", " ".repeat(d * 2)))
                .collect(),
            _ => (0..depth)
                .map(|d| format!("{}k:\n", " ".repeat(d)))
                .collect(),
        };
        let text =
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {nested}\n");
        fs::create_dir_all(repo.path().join("apps")).unwrap();
        fs::write(repo.path().join("apps/deep.yaml"), &text).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = RenderOptions::new("team", "apps");
        let error = runtime.block_on(render(repo.path(), "apps", &opts));
        prop_assert!(
            matches!(
                error,
                Err(RenderError::TooDeep { .. } | RenderError::Yaml { .. })
            ),
            "{style} x{depth}: {error:?}"
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// CEL conditions.

/// Expressions built from CEL's tokens, so most of them parse and reach the interpreter.
fn cel_expression() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(
        &[
            "result",
            "result[0]",
            "result[1]",
            "result[-1]",
            "result.rate",
            "result.a.b",
            "[",
            "]",
            "(",
            ")",
            "{",
            "}",
            ":",
            ",",
            ".",
            "+",
            "-",
            "*",
            "/",
            "%",
            "<",
            "<=",
            ">",
            ">=",
            "==",
            "!=",
            "&&",
            "||",
            "!",
            "?",
            " in ",
            "size(result)",
            "result.size()",
            "has(result.a)",
            "int(result)",
            "uint(result)",
            "double(result)",
            "string(result)",
            "bytes('a')",
            "result.all(x, x > 0)",
            "result.exists(x, x < 1)",
            "result.map(x, x * 2)",
            "result.filter(x, x > 0)",
            "matches('a', '(')",
            "'a'.matches('[')",
            "0",
            "1",
            "-1",
            "0.05",
            "1e308",
            "-1e308",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615u",
            "0u",
            "1u",
            "true",
            "false",
            "null",
            "'s'",
            "\"\\u0000\"",
            "b'\\xff'",
            "double('NaN')",
            "double('inf')",
            "duration('1s')",
            "timestamp('x')",
            "dyn(result)",
            "type(result)",
            "result[0] / 0",
            "1 / 0",
            "1 % 0",
            "0.0 / 0.0",
        ][..],
    );
    prop::collection::vec(tokens, 0..24).prop_map(|parts| parts.join(" "))
}

/// What a measurement can be: any numbers (NaN, infinities, huge), empty vectors, any JSON.
fn metric_value() -> impl Strategy<Value = MetricValue> {
    let number = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(-0.0),
    ];
    prop_oneof![
        number.clone().prop_map(MetricValue::Scalar),
        prop::collection::vec(number, 0..4).prop_map(MetricValue::Vector),
        json_value(4, &["rate", "a", "b", "NaN", "result"]).prop_map(MetricValue::Json),
    ]
}

fn metric(success: Option<String>, failure: Option<String>) -> Metric {
    serde_json::from_value(json!({
        "name": "m",
        "successCondition": success,
        "failureCondition": failure,
        "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "up"}},
    }))
    .unwrap()
}

#[test]
fn cel_conditions_never_panic_on_any_expression_or_value() {
    let expression = prop_oneof![4 => cel_expression(), 1 => ".{0,64}"];
    check(1_500, (expression, metric_value()), |(expr, value)| {
        if let Ok(condition) = Condition::compile(&expr) {
            // Ok or an error naming the expression; both are fine, unwinding is not.
            if let Err(error) = condition.evaluate(&value) {
                let named = error.to_string().contains(&format!("{expr:?}"));
                prop_assert!(named, "{}", error);
            }
        }
        Ok(())
    });
}

#[test]
fn cel_nesting_and_long_chains_are_refused_or_evaluated_without_overflowing_the_stack() {
    let shapes =
        prop::sample::select(&["(", "[", "!", "-", "+ result[0] ", "&& true ", "size("][..]);
    check(60, (shapes, 1usize..5_000), |(shape, n)| {
        let expr = match shape {
            "(" => format!("{}result[0] > 1{}", "(".repeat(n), ")".repeat(n)),
            "[" => format!("size({}1{}) > 0", "[".repeat(n), "]".repeat(n)),
            "size(" => format!("{}result{} > 0", "size(".repeat(n), ")".repeat(n)),
            "!" | "-" => format!("{}true", shape.repeat(n)),
            chain => format!("result[0] {} > 0", chain.repeat(n)),
        };
        if let Ok(condition) = Condition::compile(&expr) {
            let _ = condition.evaluate(&MetricValue::Vector(vec![0.5]));
        }
        Ok(())
    });
}

#[test]
fn missing_or_non_finite_data_is_never_a_pass() {
    let no_data = prop_oneof![
        Just(MetricValue::Vector(Vec::new())),
        Just(MetricValue::Json(Value::Null)),
    ];
    let non_finite = prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)];
    let poisoned = (
        prop::collection::vec(any::<f64>(), 0..3),
        non_finite,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut samples, bad, at)| {
            let at = at.index(samples.len() + 1);
            samples.insert(at, bad);
            if samples.len() == 1 {
                MetricValue::Scalar(bad)
            } else {
                MetricValue::Vector(samples)
            }
        });
    let value = prop_oneof![no_data, poisoned];
    let condition = prop_oneof![
        Just(None),
        Just(Some("true".to_owned())),
        Just(Some("result[0] < 0.05".to_owned())),
        Just(Some("!(result[0] > 0.05)".to_owned())),
        Just(Some("result != result".to_owned())),
        cel_expression().prop_map(Some),
    ];
    check(
        1_500,
        (value, condition.clone(), condition),
        |(value, success, failure)| {
            if success.is_none() && failure.is_none() {
                return Ok(());
            }
            let (phase, message) = judge(
                &metric(success, failure),
                &Observation::Value(value.clone()),
            );
            prop_assert_eq!(
                phase,
                AnalysisPhase::Inconclusive,
                "{:?}: {:?}",
                value,
                message
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The emulator's patch handlers.

static EMULATOR: LazyLock<(tokio::runtime::Runtime, Cluster)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(async {
        let cluster = Cluster::start("fuzz-patch").await;
        for (path, body) in [
            (
                "/api/v1/namespaces/default/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fuzz", "labels": {"a": "b"}, "finalizers": ["x/y"]}, "data": {"k": "v"}}),
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fuzz"}, "spec": {
                    "replicas": 2, "selector": {"matchLabels": {"app": "fuzz"}},
                    "template": {"metadata": {"labels": {"app": "fuzz"}}, "spec": {"containers": [
                        {"name": "web", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}]}]}}}}),
            ),
            (
                "/api/v1/namespaces/default/services",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fuzz"}, "spec": {
                    "selector": {"app": "fuzz"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
            ),
        ] {
            let created = cluster.raw("POST", path, Some("application/json"), body.to_string()).await;
            assert_eq!(created.status, 201, "{path}: {}", created.text);
        }
        cluster
    });
    (runtime, cluster)
});

const PATCH_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "resourceVersion",
    "uid",
    "managedFields",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "spec",
    "status",
    "data",
    "replicas",
    "selector",
    "matchLabels",
    "template",
    "containers",
    "image",
    "ports",
    "port",
    "containerPort",
    "protocol",
    "env",
    "value",
    "$patch",
    "delete",
    "replace",
    "merge",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/ports",
    "$deleteFromPrimitiveList/finalizers",
    "web",
    "fuzz",
    "TCP",
    "v1",
    "apps/v1",
    "ConfigMap",
    "Deployment",
    "Service",
    "k",
    "a",
];

/// JSON pointers into the objects above, valid and not.
fn pointer() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        prop::sample::select(PATCH_KEYS).prop_map(str::to_owned),
        prop::sample::select(
            &[
                "0",
                "1",
                "-",
                "01",
                "99999999999999999999",
                "",
                "~1",
                "~0",
                "~",
                "~2"
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(segment, 0..5).prop_map(|parts| {
        parts
            .iter()
            .map(|part| format!("/{part}"))
            .collect::<String>()
    })
}

fn json_patch_body() -> impl Strategy<Value = String> {
    let op = (
        prop::sample::select(&["add", "remove", "replace", "move", "copy", "test", "bogus"][..]),
        pointer(),
        pointer(),
        json_value(3, PATCH_KEYS),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        );
    prop_oneof![
        prop::collection::vec(op, 0..5).prop_map(|ops| Value::Array(ops).to_string()),
        json_value(3, PATCH_KEYS).prop_map(|v| v.to_string()),
    ]
}

/// An applied configuration that passes the handler's first checks, so the merge itself runs.
fn apply_body(kind: &'static str, api_version: &'static str) -> impl Strategy<Value = String> {
    json_value(4, PATCH_KEYS).prop_map(move |mut value| {
        if !value.is_object() {
            value = json!({"spec": value});
        }
        value["apiVersion"] = json!(api_version);
        value["kind"] = json!(kind);
        if !value["metadata"].is_object() {
            value["metadata"] = json!({});
        }
        value["metadata"]["name"] = json!("fuzz");
        value.to_string()
    })
}

#[derive(Clone, Debug)]
struct PatchRequest {
    path: String,
    media: &'static str,
    body: Vec<u8>,
}

fn patch_request() -> impl Strategy<Value = PatchRequest> {
    let targets = prop::sample::select(
        &[
            (
                "/api/v1/namespaces/default/configmaps/fuzz",
                "ConfigMap",
                "v1",
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments/fuzz",
                "Deployment",
                "apps/v1",
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments/fuzz/status",
                "Deployment",
                "apps/v1",
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments/fuzz/scale",
                "Scale",
                "autoscaling/v1",
            ),
            ("/api/v1/namespaces/default/services/fuzz", "Service", "v1"),
        ][..],
    );
    let media = prop::sample::select(
        &[
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
            "application/apply-patch+yaml",
            "application/apply-patch+json",
            "text/plain",
        ][..],
    );
    (targets, media, any::<bool>(), any::<u8>()).prop_flat_map(
        |((path, kind, version), media, force, pick)| {
            let body: BoxedStrategy<Vec<u8>> = match (media, pick % 4) {
                (_, 0) => prop::collection::vec(any::<u8>(), 0..128).boxed(),
                ("application/json-patch+json", _) => {
                    json_patch_body().prop_map(String::into_bytes).boxed()
                }
                ("application/apply-patch+yaml" | "application/apply-patch+json", 1) => {
                    yaml_like().prop_map(String::into_bytes).boxed()
                }
                ("application/apply-patch+yaml" | "application/apply-patch+json", _) => {
                    apply_body(kind, version)
                        .prop_map(String::into_bytes)
                        .boxed()
                }
                _ => json_value(4, PATCH_KEYS)
                    .prop_map(|v| v.to_string().into_bytes())
                    .boxed(),
            };
            let path = if media.starts_with("application/apply-patch") {
                format!("{path}?fieldManager=fuzz&force={force}")
            } else {
                path.to_owned()
            };
            body.prop_map(move |body| PatchRequest {
                path: path.clone(),
                media,
                body,
            })
        },
    )
}

/// Found by the patch property: a merge patch may leave a Deployment's `spec` a number, and a
/// patch of its scale subresource then answered 500. It is the client's mistake: 422.
#[test]
fn regression_scaling_an_object_whose_spec_is_not_an_object_is_a_422() {
    let (runtime, cluster) = &*EMULATOR;
    let path = "/apis/apps/v1/namespaces/default/deployments/fuzz";
    let broken = runtime.block_on(cluster.raw(
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        json!({"spec": 5}).to_string(),
    ));
    assert!(broken.status < 500, "{}", broken.text);
    let scaled = runtime.block_on(cluster.raw(
        "PATCH",
        &format!("{path}/scale"),
        Some("application/merge-patch+json"),
        json!({"spec": {"replicas": 3}}).to_string(),
    ));
    if broken.status == 200 {
        assert_eq!(scaled.status, 422, "{}", scaled.text);
        assert_eq!(scaled.body["reason"], "Invalid", "{}", scaled.text);
    }
}

#[test]
fn patch_handlers_answer_bad_patches_with_4xx_never_5xx() {
    let (runtime, cluster) = &*EMULATOR;
    // About 0.1 s a case (two HTTP requests in the debug build).
    check(200, patch_request(), |request| {
        let answer = runtime.block_on(cluster.raw(
            "PATCH",
            &request.path,
            Some(request.media),
            request.body.clone(),
        ));
        prop_assert!(
            answer.status < 500,
            "{} {} {:?}: {} {}",
            request.media,
            request.path,
            String::from_utf8_lossy(&request.body),
            answer.status,
            answer.text
        );
        if answer.status >= 400 {
            prop_assert_eq!(&answer.body["kind"], "Status", "{}", answer.text);
            prop_assert_eq!(answer.body["code"].as_u64(), Some(u64::from(answer.status)));
        }
        // The object is still there and readable: nothing was poisoned or half-written.
        let path = request.path.split('?').next().unwrap_or_default();
        let read = runtime.block_on(cluster.raw("GET", path, None, Vec::new()));
        prop_assert_eq!(read.status, 200, "{}", read.text);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Route weight math.

fn backends() -> Backends {
    Backends {
        stable_service: "stable".into(),
        canary_service: "canary".into(),
        rollout_namespace: "default".into(),
    }
}

/// Any weight a route can carry, including ones no sane person writes.
fn route_weight() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (0i64..=1_000).prop_map(|w| Some(json!(w))),
        any::<i64>().prop_map(|w| Some(json!(w))),
        prop::sample::select(vec![i64::MAX, i64::MIN, i64::from(i32::MAX), -1])
            .prop_map(|w| Some(json!(w))),
        Just(Some(json!(1.5))),
        Just(Some(json!("50"))),
    ]
}

fn backend_ref(name: &'static str, weight: Option<Value>) -> Value {
    let mut backend = json!({"name": name, "port": 80});
    if let Some(weight) = weight {
        backend["weight"] = weight;
    }
    backend
}

/// An HTTPRoute with 1–3 rules, each routing to stable, maybe canary, maybe something else.
fn http_route() -> impl Strategy<Value = Value> {
    let rule = (
        route_weight(),
        prop::option::of(route_weight()),
        prop::option::of(route_weight()),
        any::<bool>(),
    )
        .prop_map(|(stable, canary, other, canary_first)| {
            let mut refs = vec![backend_ref("stable", stable)];
            if let Some(weight) = canary {
                let canary = backend_ref("canary", weight);
                if canary_first {
                    refs.insert(0, canary);
                } else {
                    refs.push(canary);
                }
            }
            if let Some(weight) = other {
                refs.push(backend_ref("other", weight));
            }
            json!({"backendRefs": refs})
        });
    prop::collection::vec(rule, 1..4).prop_map(|rules| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": rules}})
    })
}

fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut merged = target.clone();
    json_patch::merge(&mut merged, patch);
    merged
}

fn sane(weights: Weights) -> bool {
    (0..=100).contains(&weights.canary)
        && (0..=100).contains(&weights.stable)
        && (weights.canary + weights.stable == 100
            || weights
                == Weights {
                    canary: 0,
                    stable: 0,
                })
}

#[test]
fn http_route_weights_are_percentages_that_sum_to_100_for_any_route() {
    check(
        2_000,
        (http_route(), 0i32..=100, any::<bool>()),
        |(route, percent, complete)| {
            let observed = gateway_api::observed_weights(&route, &backends());
            if let Ok(observed) = observed {
                prop_assert!(sane(observed), "{observed:?} from {route}");
            }
            let wanted = Weights::canary(percent).unwrap();
            let complete = complete && percent == 0;
            match gateway_api::desired_route(&route, &backends(), wanted, complete) {
                Ok(change) => {
                    let Some(change) = change else {
                        // Nothing to write: the route already routes this way.
                        prop_assert_eq!(
                            gateway_api::observed_weights(&route, &backends()).ok(),
                            Some(wanted)
                        );
                        return Ok(());
                    };
                    let after = merge_patch(&route, &change.merge_patch(&route));
                    prop_assert_eq!(
                        gateway_api::observed_weights(&after, &backends()).ok(),
                        Some(wanted),
                        "{}",
                        after
                    );
                    // Every weight weir wrote is the stable or canary share, never negative.
                    for rule in after["spec"]["rules"].as_array().into_iter().flatten() {
                        let refs = rule["backendRefs"].as_array().into_iter().flatten();
                        let has_canary = refs.clone().any(|backend| backend["name"] == "canary");
                        // A stable-only rule is left alone while the canary gets nothing.
                        if !has_canary && wanted.canary == 0 {
                            continue;
                        }
                        for backend in refs {
                            let expected = match backend["name"].as_str() {
                                Some("stable") => wanted.stable,
                                Some("canary") => wanted.canary,
                                _ => continue,
                            };
                            prop_assert_eq!(
                                backend["weight"].as_i64(),
                                Some(i64::from(expected)),
                                "{}",
                                after
                            );
                        }
                    }
                }
                Err(error) => prop_assert!(error.is_invalid_spec(), "{error}"),
            }
            Ok(())
        },
    );
}

/// Found by the route property: weights near `i64::MAX` overflowed the percentage arithmetic
/// (a panic in a debug build, a wrong share in release).
#[test]
fn regression_huge_route_weights_read_as_percentages() {
    let route = |stable: i64, canary: i64| {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": [{"backendRefs": [
            {"name": "stable", "port": 80, "weight": stable},
            {"name": "canary", "port": 80, "weight": canary}]}]}})
    };
    let cases = [
        (i64::MAX, i64::MAX, 50),
        (i64::MAX, 0, 0),
        (0, i64::MAX, 100),
        (i64::MIN, i64::MAX, 100),
        (i64::MAX / 3, i64::MAX / 3 * 2, 67),
    ];
    for (stable, canary, percent) in cases {
        let observed = gateway_api::observed_weights(&route(stable, canary), &backends()).unwrap();
        assert_eq!(
            observed,
            Weights::canary(percent).unwrap(),
            "{stable} {canary}"
        );
    }
}

#[test]
fn weights_outside_0_to_100_are_refused() {
    check(500, any::<i32>(), |percent| {
        match Weights::canary(percent) {
            Ok(weights) => {
                prop_assert!((0..=100).contains(&percent));
                prop_assert_eq!(weights.canary + weights.stable, 100);
            }
            Err(_) => prop_assert!(!(0..=100).contains(&percent)),
        }
        Ok(())
    });
}

#[test]
fn virtual_service_weights_round_trip_for_any_route() {
    let destination = |host: &'static str| {
        route_weight().prop_map(move |weight| {
            let mut d = json!({"destination": {"host": host}});
            if let Some(weight) = weight {
                d["weight"] = weight;
            }
            d
        })
    };
    let route = (
        destination("stable"),
        destination("canary"),
        prop::option::of(destination("other")),
    )
        .prop_map(|(stable, canary, other)| {
            let mut route = vec![stable, canary];
            route.extend(other);
            json!({"name": "primary", "route": route})
        });
    check(1_000, (route, 0i32..=100), |(http, percent)| {
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "web", "namespace": "default"}, "spec": {"hosts": ["web"], "http": [http]}});
        let names = vec!["primary".to_owned()];
        let _ = istio::observed_weights(&vs, &names, &backends());
        let wanted = Weights::canary(percent).unwrap();
        match istio::desired_http(&vs, &names, &backends(), wanted) {
            Ok(change) => {
                let mut after = vs.clone();
                if let Some(http) = change {
                    after["spec"]["http"] = http;
                }
                prop_assert_eq!(
                    istio::observed_weights(&after, &names, &backends()).ok(),
                    Some(wanted)
                );
            }
            Err(error) => prop_assert!(error.is_invalid_spec(), "{error}"),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Canary step weights.

#[derive(Clone, Debug)]
enum Step {
    SetWeight(i32),
    Pause,
    Scale(i32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0i32..=100).prop_map(Step::SetWeight),
        1 => any::<i32>().prop_map(Step::SetWeight),
        1 => Just(Step::Pause),
        1 => (0i32..=10).prop_map(Step::Scale),
    ]
}

fn step_json(step: &Step) -> Value {
    match step {
        Step::SetWeight(w) => json!({"setWeight": w}),
        Step::Pause => json!({"pause": {}}),
        Step::Scale(n) => json!({"setCanaryScale": {"replicas": n}}),
    }
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}})
}

fn hash(image: &str) -> String {
    weir::rollout::pod_template_hash(&serde_json::from_value(template(image)).unwrap())
}

#[derive(Clone, Debug)]
struct Release {
    steps: Vec<Step>,
    index: i32,
    abort: bool,
    replicas: i32,
    canary_ready: i32,
    routed: Option<i32>,
}

fn release() -> impl Strategy<Value = Release> {
    (
        prop::collection::vec(step(), 0..8),
        -2i32..10,
        any::<bool>(),
        prop_oneof![0i32..=10, Just(i32::MAX)],
        prop_oneof![0i32..=10, Just(i32::MAX)],
        prop::option::of(prop_oneof![0i32..=100, any::<i32>()]),
    )
        .prop_map(
            |(steps, index, abort, replicas, canary_ready, routed)| Release {
                steps,
                index,
                abort,
                replicas,
                canary_ready,
                routed,
            },
        )
}

fn plan_release(r: &Release) -> weir::rollout::Plan {
    let steps: Vec<Value> = r.steps.iter().map(step_json).collect();
    let ro: weir::api::Rollout = serde_json::from_value(json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1", "generation": 2},
        "spec": {"replicas": r.replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template("v2"),
                 "strategy": {"canary": {"stableService": "stable", "canaryService": "canary", "steps": steps,
                     "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}}}}},
        "status": {"stableRS": hash("v1"), "currentPodHash": hash("v2"), "currentStepIndex": r.index,
                   "phase": "Progressing", "abort": r.abort},
    }))
    .unwrap();
    let rs = |image: &str, replicas: i32, ready: i32| ObservedReplicaSet {
        name: format!("web-{}", hash(image)),
        hash: hash(image),
        replicas,
        ready,
        available: ready,
        scale_down_at: None,
        created: None,
    };
    let observed = Observed {
        replica_sets: vec![
            rs("v1", r.replicas, r.replicas),
            rs("v2", r.canary_ready, r.canary_ready),
        ],
        services: BTreeMap::from([
            ("stable".into(), ServiceState::Present(Some(hash("v1")))),
            ("canary".into(), ServiceState::Present(Some(hash("v2")))),
        ]),
        traffic: TrafficState::Weights(r.routed),
        ..Default::default()
    };
    let now = "2026-11-22T12:00:00Z".parse().unwrap();
    weir::rollout::plan(&ro, &observed, now)
}

fn planned_weights(plan: &weir::rollout::Plan) -> Vec<i32> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::SetWeights { canary, .. } => Some(*canary),
            _ => None,
        })
        .collect()
}

/// Found by the step property: ReplicaSets reporting `i32::MAX` ready pods overflowed the sum
/// of the Rollout's replica counts.
#[test]
fn regression_replica_counts_near_i32_max_do_not_overflow() {
    let plan = plan_release(&Release {
        steps: Vec::new(),
        index: 0,
        abort: false,
        replicas: 1,
        canary_ready: i32::MAX,
        routed: None,
    });
    assert_eq!(plan.status.ready_replicas, i32::MAX);
}

#[test]
fn canary_steps_set_weights_in_range_and_zero_after_an_abort() {
    check(2_000, release(), |r| {
        let plan = plan_release(&r);
        let written = planned_weights(&plan);
        let recorded = plan.status.weights;
        for canary in written.iter().copied().chain(recorded.map(|w| w.canary)) {
            prop_assert!((0..=100).contains(&canary), "{canary} for {r:?}");
        }
        if let Some(w) = recorded {
            prop_assert_eq!(w.canary + w.stable, 100);
        }
        let invalid = r
            .steps
            .iter()
            .any(|s| matches!(s, Step::SetWeight(w) if !(0..=100).contains(w)));
        if invalid {
            prop_assert!(
                written.is_empty(),
                "an invalid spec changed traffic: {written:?}"
            );
            prop_assert!(weir::api::conditions::is_true(
                &plan.status.conditions,
                "InvalidSpec"
            ));
        } else if r.abort {
            prop_assert!(written.iter().all(|&w| w == 0), "{written:?} after abort");
            prop_assert_eq!(recorded.map(|w| w.canary), Some(0));
        }
        Ok(())
    });
}

#[test]
fn canary_weight_never_goes_down_as_ascending_steps_advance() {
    let ascending = prop::collection::vec(0i32..=100, 1..8).prop_map(|mut weights| {
        weights.sort_unstable();
        weights
    });
    check(300, (ascending, 1i32..=10), |(weights, replicas)| {
        let mut last = 0;
        for index in 0..=weights.len() as i32 {
            let r = Release {
                steps: weights.iter().copied().map(Step::SetWeight).collect(),
                index,
                abort: false,
                replicas,
                canary_ready: replicas,
                routed: Some(last),
            };
            let plan = plan_release(&r);
            let now = plan.status.weights.map_or(last, |w| w.canary);
            prop_assert!(
                now >= last,
                "step {index} of {weights:?}: {now} after {last}"
            );
            last = now;
        }
        Ok(())
    });
}

/// Found by the nesting property: 20 nested parentheses, or a chain of 100 `+`, overflowed the
/// stack of the calling thread inside CEL's parser and aborted the process. Now they are refused
/// by size, and whatever fits the limits runs on a thread with its own stack.
#[test]
fn regression_deep_or_long_conditions_are_refused_and_the_largest_allowed_ones_evaluate() {
    use weir::analysis::condition::{MAX_CONDITION_NESTING, MAX_CONDITION_OPERATORS};
    for refused in [
        format!("{}result[0] > 1{}", "(".repeat(20), ")".repeat(20)),
        format!("result[0] {} > 0", "+ 1 ".repeat(100)),
        format!("{}result{} > 0", "size(".repeat(50), ")".repeat(50)),
        "1".repeat(5_000),
    ] {
        let error = Condition::compile(&refused).unwrap_err().to_string();
        assert!(error.contains("does not parse"), "{error}");
    }
    // The worst case inside the limits: the deepest nesting, then the longest chain.
    let depth = MAX_CONDITION_NESTING - 1;
    let chain = MAX_CONDITION_OPERATORS - depth - 4;
    let deepest = format!(
        "{}result[0]{} {} > 0.5",
        "(".repeat(depth),
        ")".repeat(depth),
        "+ 1 ".repeat(chain)
    );
    let nested_sizes = format!("{}result{} > 0", "size(".repeat(depth), ")".repeat(depth));
    for allowed in [deepest, nested_sizes] {
        let condition = Condition::compile(&allowed).unwrap();
        let _ = condition.evaluate(&MetricValue::Vector(vec![0.5]));
    }
}
