//! The HTTP front of the emulator: routing of Kubernetes REST paths to the store, content negotiation,
//! watches as chunked JSON streams, and the `/emulator/*` admin endpoints for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::api_error::ApiError;
use super::discovery;
use super::faults::{FaultConfig, FaultDice};
use super::merge::{self, MergeError};
use super::object_rules::{DeleteOptions, FieldValidation, WriteContext, now_rfc3339};
use super::openapi;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{EventType, ListOptions, Store, watch_line};
use super::table;

/// Largest request body accepted, as the apiserver's limit for a single object.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Counters of requests, for tests that assert how many writes a controller issued.
#[derive(Debug, Default)]
pub struct Stats {
    by_verb: Mutex<BTreeMap<String, u64>>,
    writes_by_manager: Mutex<BTreeMap<String, u64>>,
    by_resource: Mutex<BTreeMap<ResourceRequest, u64>>,
    active_watches: AtomicU64,
    /// Watch events sent, by resource (`replicasets.apps`): what watching costs the server.
    watch_events: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

/// What one request asked for, in RBAC's terms, and who asked: lets a test check a client's requests
/// against the permissions it is granted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResourceRequest {
    user_agent: String,
    verb: String,
    group: String,
    resource: String,
}

impl Stats {
    fn count(&self, verb: &str, manager: Option<&str>) {
        if let Ok(mut m) = self.by_verb.lock() {
            *m.entry(verb.into()).or_default() += 1;
        }
        if let Some(manager) = manager
            && let Ok(mut m) = self.writes_by_manager.lock()
        {
            *m.entry(manager.into()).or_default() += 1;
        }
    }

    fn count_resource(&self, request: ResourceRequest) {
        if let Ok(mut m) = self.by_resource.lock() {
            *m.entry(request).or_default() += 1;
        }
    }

    /// The counter of watch events sent for `resource`.
    fn watch_events_of(&self, resource: &str) -> Arc<AtomicU64> {
        let mut all = self.watch_events.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(resource.to_owned()).or_default().clone()
    }

    fn snapshot(&self, store: &Store) -> Value {
        let verbs = self.by_verb.lock().map(|m| m.clone()).unwrap_or_default();
        let writes: u64 = ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .filter_map(|v| verbs.get(*v))
            .sum();
        json!({
            "requests": verbs,
            "writes": writes,
            "writesByManager": self.writes_by_manager.lock().map(|m| m.clone()).unwrap_or_default(),
            "requestsByResource": self.by_resource.lock().map(|m| {
                m.iter().map(|(r, n)| json!({
                    "userAgent": r.user_agent, "verb": r.verb, "group": r.group,
                    "resource": r.resource, "count": n,
                })).collect::<Vec<_>>()
            }).unwrap_or_default(),
            "activeWatches": self.active_watches.load(Ordering::Relaxed),
            "watchEvents": self.watch_events.lock().map(|m| {
                m.iter().map(|(r, n)| (r.clone(), n.load(Ordering::Relaxed))).collect::<BTreeMap<_, _>>()
            }).unwrap_or_default(),
            "objects": store.object_count(),
            "resourceVersion": store.current_rv().to_string(),
        })
    }

    /// Zeroes every counter, as `POST /emulator/stats/reset` does.
    pub fn reset(&self) {
        if let Ok(mut m) = self.by_verb.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.writes_by_manager.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.by_resource.lock() {
            m.clear();
        }
        if let Ok(m) = self.watch_events.lock() {
            m.values().for_each(|n| n.store(0, Ordering::Relaxed));
        }
    }
}

/// Shared state of the HTTP layer.
pub struct App {
    /// The object store.
    pub store: Arc<Store>,
    /// Current fault injection.
    pub faults: RwLock<FaultConfig>,
    /// The dice the faults are rolled with (seeded by `FaultConfig::seed`).
    pub fault_dice: Mutex<FaultDice>,
    /// Bumped to end every open watch.
    pub drop_watches: watch::Sender<u64>,
    /// Request counters.
    pub stats: Stats,
    /// The address clients reach us at, for /api.
    pub server_address: String,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
}

impl App {
    /// Ends every open watch stream; clients resume from their last resourceVersion.
    pub fn drop_all_watches(&self) -> u64 {
        let n = self.stats.active_watches.load(Ordering::Relaxed);
        self.drop_watches.send_modify(|g| *g += 1);
        n
    }

    /// The request counters as `GET /emulator/stats` returns them.
    pub fn stats_json(&self) -> Value {
        self.stats.snapshot(&self.store)
    }

    /// The current fault configuration.
    pub fn fault_config(&self) -> FaultConfig {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }
}

/// The axum router: everything goes through one handler, because Kubernetes paths are not a fixed tree.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    match dispatch(app, req).await {
        Ok(resp) => resp,
        Err(err) => error_response(&err),
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn error_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

/// What a path addresses.
#[derive(Debug, PartialEq)]
enum Target {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV3Root,
    OpenApiV3(String, String),
    Admin(String),
    Resource(ResourcePath),
}

#[derive(Debug, PartialEq, Clone)]
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let owned = |s: &&str| s.to_string();
    match segs.as_slice() {
        ["version"] => Some(Target::Version),
        ["healthz" | "livez" | "readyz", ..] => Some(Target::Health),
        ["api"] => Some(Target::CoreVersions),
        ["apis"] => Some(Target::Groups),
        ["apis", g] => Some(Target::Group(g.to_string())),
        ["api", v] => Some(Target::ResourceList(String::new(), v.to_string())),
        ["apis", g, v] => Some(Target::ResourceList(g.to_string(), v.to_string())),
        ["openapi", "v3"] => Some(Target::OpenApiV3Root),
        ["openapi", "v3", "api", v] => Some(Target::OpenApiV3(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => Some(Target::OpenApiV3(g.to_string(), v.to_string())),
        ["emulator", rest @ ..] => Some(Target::Admin(rest.join("/"))),
        ["api", v, rest @ ..] => resource_path("", v, rest),
        ["apis", g, v, rest @ ..] => resource_path(g, v, rest),
        _ => {
            let _ = owned;
            None
        }
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let mk = |ns: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Some(Target::Resource(ResourcePath {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: ns.map(String::from),
            name: name.map(String::from),
            sub: sub.map(String::from),
        }))
    };
    match rest {
        ["namespaces", name, sub @ ("status" | "finalize")] => {
            mk(None, "namespaces", Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => mk(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => mk(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => mk(Some(ns), plural, Some(name), Some(sub)),
        [plural] => mk(None, plural, None, None),
        [plural, name] => mk(None, plural, Some(name), None),
        [plural, name, sub] => mk(None, plural, Some(name), Some(sub)),
        _ => None,
    }
}

async fn dispatch(app: Arc<App>, req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let query: HashMap<String, String> = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let target = parse_path(uri.path()).ok_or_else(ApiError::no_resource)?;
    let registry = || app.store.registry();
    let get_only = |v: Value| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(method.as_str(), uri.path()));
        }
        Ok(json_response(StatusCode::OK, &v))
    };
    match target {
        Target::Version => get_only(discovery::version()),
        Target::Health => Ok((StatusCode::OK, "ok").into_response()),
        Target::CoreVersions => get_only(discovery::core_versions(&app.server_address)),
        Target::Groups => get_only(discovery::group_list(&registry())),
        Target::Group(g) => {
            get_only(discovery::group(&registry(), &g).ok_or_else(ApiError::no_resource)?)
        }
        Target::ResourceList(g, v) => get_only(
            discovery::resource_list(&registry(), &g, &v).ok_or_else(ApiError::no_resource)?,
        ),
        Target::OpenApiV3Root => get_only(openapi::root(&registry())),
        Target::OpenApiV3(g, v) => {
            get_only(openapi::gv_document(&registry(), &g, &v).ok_or_else(ApiError::no_resource)?)
        }
        Target::Admin(path) => {
            let body = read_body(&headers, req.into_body()).await?;
            admin(&app, &method, &path, &body)
        }
        Target::Resource(path) => {
            let body = read_body(&headers, req.into_body()).await?;
            resource(app, method, path, query, headers, body).await
        }
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    // A rejected body is still read (up to a bound) and dropped, so the client finishes sending and reads
    // the 413 instead of meeting a reset connection.
    const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut too_large = declared.is_some_and(|n| n > MAX_BODY_BYTES);
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY_BYTES));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiError::bad_request("the request body could not be read"));
        };
        seen += chunk.len();
        if seen > MAX_BODY_BYTES {
            too_large = true;
        }
        if too_large {
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if too_large {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(Bytes::from(buf))
}

fn admin(app: &App, method: &Method, path: &str, body: &Bytes) -> Result<Response, ApiError> {
    match (method.as_str(), path) {
        ("GET", "stats") => Ok(json_response(
            StatusCode::OK,
            &app.stats.snapshot(&app.store),
        )),
        ("POST", "stats/reset") => {
            app.stats.reset();
            Ok(json_response(
                StatusCode::OK,
                &app.stats.snapshot(&app.store),
            ))
        }
        ("GET", "faults") => Ok(json_response(StatusCode::OK, &json!(app.fault_config()))),
        ("PUT" | "POST", "faults") => {
            let cfg: FaultConfig = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid fault configuration: {e}")))?;
            if !(0.0..=1.0).contains(&cfg.error_rate) {
                return Err(ApiError::bad_request("errorRate must be between 0 and 1"));
            }
            if let Some(sel) = &cfg.never_ready_selector {
                LabelSelector::parse(sel).map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
            if let Ok(mut f) = app.faults.write() {
                *f = cfg.clone();
            }
            Ok(json_response(StatusCode::OK, &json!(cfg)))
        }
        ("POST", "drop-watches") => {
            let n = app.drop_all_watches();
            Ok(json_response(StatusCode::OK, &json!({"dropped": n})))
        }
        _ => Err(ApiError::no_resource()),
    }
}

/// The media type of the Content-Type header, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the body is not valid UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Decodes a create/update body by its Content-Type.
fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let v = match media_type(headers).as_str() {
        "application/json" => parse_json(body)?,
        "application/yaml" => parse_yaml(body)?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format{} - accepted media types include: application/json, application/yaml",
                if other.is_empty() {
                    String::new()
                } else {
                    format!(" ({other})")
                }
            )));
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

fn field_manager(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

fn write_context(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    sub: Option<&str>,
) -> Result<WriteContext, ApiError> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Ignore, Warn, Strict"
            )));
        }
    };
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )));
        }
    };
    Ok(WriteContext {
        manager: field_manager(query, headers),
        dry_run,
        subresource: sub.map(String::from),
        field_validation,
        ..WriteContext::default()
    })
}

/// Adds `Warning` headers the way the apiserver sends them.
fn with_warnings(mut resp: Response, ctx: &WriteContext) -> Response {
    if let Ok(ws) = ctx.warnings.lock() {
        for w in ws.iter() {
            let escaped = w.replace('"', "\\\"");
            if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
    }
    resp
}

/// Sets the apiVersion a client asked for, when the object was stored at another version of its group.
fn served<'a>(rt: &ResourceType, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    let want = rt.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return std::borrow::Cow::Borrowed(obj);
    }
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(want));
    }
    std::borrow::Cow::Owned(o)
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

async fn resource(
    app: Arc<App>,
    method: Method,
    path: ResourcePath,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rt = app
        .store
        .resource(&path.group, &path.version, &path.plural)
        .ok_or_else(ApiError::no_resource)?;
    // A namespaced kind addressed without a namespace is only valid for cross-namespace list/watch.
    if rt.namespaced && path.namespace.is_none() && (path.name.is_some() || method == Method::POST)
    {
        return Err(ApiError::no_resource());
    }
    if !rt.namespaced && path.namespace.is_some() {
        return Err(ApiError::no_resource());
    }
    match path.sub.as_deref() {
        None => {}
        Some("status") if rt.status_subresource => {}
        Some("scale") if rt.scale.is_some() => {}
        Some("finalize") if rt.kind == "Namespace" => {}
        Some(_) => return Err(ApiError::no_resource()),
    }
    let is_watch = method == Method::GET
        && matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, path.name.is_some()) {
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed(method.as_str(), &path.plural)),
    };
    let manager = is_write(&method).then(|| field_manager(&query, &headers));
    app.stats.count(verb, manager.as_deref());
    app.stats.count_resource(ResourceRequest {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect(),
        verb: verb.into(),
        group: rt.group.clone(),
        resource: match &path.sub {
            Some(sub) => format!("{}/{sub}", rt.plural),
            None => rt.plural.clone(),
        },
    });
    let injected = app
        .fault_dice
        .lock()
        .ok()
        .and_then(|mut dice| app.fault_config().roll(&mut dice, is_write(&method)));
    if let Some(code) = injected {
        return Err(match code {
            409 => ApiError::conflict(&rt.group, &rt.plural, path.name.as_deref().unwrap_or(""), "injected fault"),
            503 => ApiError::unavailable("injected fault: the server is currently unable to handle the request"),
            c => ApiError {
                code: c,
                reason: "InternalError",
                message: "injected fault: an error on the server has prevented the request from succeeding".into(),
                details: None,
            },
        });
    }
    let ns = path.namespace.clone().unwrap_or_default();
    let name = path.name.clone().unwrap_or_default();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match verb {
        "get" => {
            let obj = app.store.get(&rt, &ns, &name)?;
            if path.sub.as_deref() == Some("scale") {
                return Ok(json_response(StatusCode::OK, &to_scale(&rt, &obj)));
            }
            if path.sub.is_none() && table::wants_table(&accept) {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(&rt, &[&served(&rt, &obj)], None, jiff::Timestamp::now()),
                ));
            }
            Ok(json_response(StatusCode::OK, &served(&rt, &obj)))
        }
        "list" => list(&app, &rt, path.namespace.as_deref(), &query, &accept),
        "watch" => watch_stream(app.clone(), rt, path.namespace.clone(), &query, &accept),
        "create" => {
            let ctx = write_context(&query, &headers, None)?;
            let obj = decode_object(&headers, &body)?;
            let created = app.store.create(&rt, &ns, obj, &ctx)?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &served(&rt, &created)),
                &ctx,
            ))
        }
        "update" => {
            let ctx = write_context(&query, &headers, path.sub.as_deref())?;
            let obj = decode_object(&headers, &body)?;
            if path.sub.as_deref() == Some("scale") {
                let updated = app.store.modify(&rt, &ns, &name, &ctx, false, |cur| {
                    apply_scale(&rt, cur.unwrap_or(&Value::Null), &obj)
                })?;
                return Ok(json_response(StatusCode::OK, &to_scale(&rt, &updated)));
            }
            let updated = app
                .store
                .modify(&rt, &ns, &name, &ctx, false, |_| Ok(obj.clone()))?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &served(&rt, &updated)),
                &ctx,
            ))
        }
        "patch" => patch(
            &app,
            &rt,
            &ns,
            &name,
            path.sub.as_deref(),
            &query,
            &headers,
            &body,
        ),
        "delete" => {
            let ctx = write_context(&query, &headers, None)?;
            let opts_body = if body.is_empty() {
                None
            } else {
                Some(parse_json(&body)?)
            };
            let opts = DeleteOptions::parse(
                opts_body.as_ref(),
                query.get("propagationPolicy").map(String::as_str),
                query.get("orphanDependents").map(|v| v == "true"),
            )?;
            let (obj, gone) = app.store.delete(&rt, &ns, &name, &opts, &ctx)?;
            let code = if gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &served(&rt, &obj)))
        }
        "deletecollection" => {
            let opts_body = if body.is_empty() {
                None
            } else {
                Some(parse_json(&body)?)
            };
            let opts = DeleteOptions::parse(
                opts_body.as_ref(),
                query.get("propagationPolicy").map(String::as_str),
                None,
            )?;
            let filter = selector_filter(&rt, &query)?;
            let deleted =
                app.store
                    .delete_collection(&rt, path.namespace.as_deref(), &filter, &opts);
            let items: Vec<Value> = deleted
                .iter()
                .map(|o| served(&rt, o).into_owned())
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": app.store.current_rv().to_string()}, "items": items}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), &path.plural)),
    }
}

fn selector_filter(
    rt: &ResourceType,
    query: &HashMap<String, String>,
) -> Result<impl Fn(&Value) -> bool + use<>, ApiError> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &rt.kind,
    )
    .map_err(|e| ApiError::bad_request(e.0))?;
    Ok(move |o: &Value| labels.matches(o) && fields.matches(o))
}

fn list(
    app: &App,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let filter = selector_filter(rt, query)?;
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
        None => 0,
    };
    let selective = ["labelSelector", "fieldSelector"]
        .iter()
        .any(|k| query.get(*k).is_some_and(|s| !s.trim().is_empty()));
    let page = app.store.list(
        rt,
        &ListOptions {
            namespace: ns,
            filter: if selective { Some(&filter) } else { None },
            limit,
            continue_token: query
                .get("continue")
                .map(String::as_str)
                .filter(|c| !c.is_empty()),
        },
    )?;
    if table::wants_table(accept) {
        let objs: Vec<Value> = page
            .items
            .iter()
            .map(|o| served(rt, o).into_owned())
            .collect();
        let refs: Vec<&Value> = objs.iter().collect();
        let mut t = table::table(rt, &refs, Some(page.rv.to_string()), jiff::Timestamp::now());
        if let (Some(c), Some(m)) = (
            &page.continue_token,
            t.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            m.insert("continue".into(), json!(c));
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    // Written by hand so that a 60,000-item list is serialized once, without building a second tree.
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(page.rv.to_string()));
    if let Some(c) = &page.continue_token {
        meta.insert("continue".into(), json!(c));
    }
    if let Some(r) = page.remaining {
        meta.insert("remainingItemCount".into(), json!(r));
    }
    let mut out = Vec::with_capacity(256 + page.items.len() * 512);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(&serde_json::to_vec(&rt.list_kind).unwrap_or_default());
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(&serde_json::to_vec(&rt.api_version()).unwrap_or_default());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
    out.extend_from_slice(b",\"items\":[");
    let want = rt.api_version();
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if item.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
            let _ = serde_json::to_writer(&mut out, &**item);
        } else {
            let _ = serde_json::to_writer(&mut out, &served(rt, item));
        }
    }
    out.extend_from_slice(b"]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}

#[allow(clippy::too_many_arguments)]
fn patch(
    app: &App,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut ctx = write_context(query, headers, sub)?;
    let media = media_type(headers);
    let scale = sub == Some("scale");
    let merge_err = |e: MergeError| merge_error(rt, name, e);
    match media.as_str() {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            if !query.contains_key("fieldManager") {
                return Err(ApiError::bad_request(
                    "PATCH requests with apply content type must have fieldManager",
                ));
            }
            if scale {
                return Err(ApiError::unsupported_media_type(
                    "apply is not supported for the scale subresource",
                ));
            }
            let applied = if media.ends_with("yaml") {
                parse_yaml(body)?
            } else {
                parse_json(body)?
            };
            if !applied.is_object() {
                return Err(ApiError::bad_request(
                    "the applied configuration must be an object",
                ));
            }
            for field in ["apiVersion", "kind"] {
                if applied
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(ApiError::bad_request(format!(
                        "invalid object: Object '{}' is missing",
                        if field == "kind" {
                            "Kind"
                        } else {
                            "apiVersion"
                        }
                    )));
                }
            }
            let applied_name = applied
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if applied_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )));
            }
            ctx.apply = true;
            let force = query.get("force").is_some_and(|f| f == "true");
            let now = now_rfc3339();
            let manager = ctx.manager.clone();
            let create = sub.is_none();
            let existed = app.store.get(rt, ns, name).is_ok();
            let obj = app.store.modify(rt, ns, name, &ctx, create, |cur| {
                merge::server_side_apply(cur, &applied, &manager, force, &rt.merge, &now, sub)
                    .map_err(merge_err)
            })?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(with_warnings(json_response(code, &served(rt, &obj)), &ctx))
        }
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            if media == "application/strategic-merge-patch+json" && !rt.builtin {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let patch_doc = serde_json::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let apply_patch = |target: &Value| -> Result<Value, ApiError> {
                match media.as_str() {
                    "application/merge-patch+json" => {
                        if !patch_doc.is_object() {
                            return Err(ApiError::bad_request(
                                "a merge patch must be a JSON object",
                            ));
                        }
                        let mut out = target.clone();
                        json_patch::merge(&mut out, &patch_doc);
                        Ok(out)
                    }
                    "application/json-patch+json" => {
                        let ops: json_patch::Patch = serde_json::from_value(patch_doc.clone())
                            .map_err(|e| {
                                ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                            })?;
                        let mut out = target.clone();
                        json_patch::patch(&mut out, &ops).map_err(|e| ApiError::unprocessable(format!("the server rejected our request due to an error in our request: {e}")))?;
                        Ok(out)
                    }
                    _ => merge::strategic_merge(target, &patch_doc, &rt.merge).map_err(merge_err),
                }
            };
            let obj = app.store.modify(rt, ns, name, &ctx, false, |cur| {
                let cur = cur.unwrap_or(&Value::Null);
                if scale {
                    let patched = apply_patch(&to_scale(rt, cur))?;
                    return apply_scale(rt, cur, &patched);
                }
                apply_patch(cur)
            })?;
            if scale {
                return Ok(json_response(StatusCode::OK, &to_scale(rt, &obj)));
            }
            Ok(with_warnings(
                json_response(StatusCode::OK, &served(rt, &obj)),
                &ctx,
            ))
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format{} - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
            if other.is_empty() {
                String::new()
            } else {
                format!(" ({other})")
            },
            if rt.builtin {
                ", application/strategic-merge-patch+json"
            } else {
                ""
            }
        ))),
    }
}

fn merge_error(rt: &ResourceType, name: &str, err: MergeError) -> ApiError {
    let status = err.to_status_parts(&rt.api_version());
    match status.code {
        409 => ApiError::conflict_with(
            status.message,
            json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": status.causes}),
        ),
        400 => ApiError::bad_request(status.message),
        _ => ApiError::unprocessable(status.message),
    }
}

fn pointer_of(path: &str) -> String {
    format!("/{}", path.trim_start_matches('.').replace('.', "/"))
}

fn to_scale(rt: &ResourceType, obj: &Value) -> Value {
    let Some(paths) = &rt.scale else {
        return Value::Null;
    };
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let mut status = json!({"replicas": obj.pointer(&pointer_of(&paths.status_replicas)).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(sel) = paths
        .label_selector
        .as_ref()
        .and_then(|p| obj.pointer(&pointer_of(p)))
        && let Some(m) = status.as_object_mut()
    {
        let sel = match sel {
            Value::String(s) => s.clone(),
            other => label_selector_string(other),
        };
        m.insert("selector".into(), json!(sel));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"), "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")},
        "spec": {"replicas": obj.pointer(&pointer_of(&paths.spec_replicas)).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

fn label_selector_string(sel: &Value) -> String {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn apply_scale(rt: &ResourceType, current: &Value, scale: &Value) -> Result<Value, ApiError> {
    let Some(paths) = &rt.scale else {
        return Err(ApiError::no_resource());
    };
    let name = current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0 && *r <= i64::from(i32::MAX));
    let Some(replicas) = replicas else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![(
                "FieldValueInvalid".into(),
                "Invalid value: must be a non-negative integer".into(),
                "spec.replicas".into(),
            )],
        ));
    };
    let mut next = current.clone();
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.insert("resourceVersion".into(), json!(rv));
    }
    let mut cur = &mut next;
    let pointer = pointer_of(&paths.spec_replicas);
    let parts: Vec<&str> = pointer.split('/').filter(|p| !p.is_empty()).collect();
    for (i, p) in parts.iter().enumerate() {
        // The stored object is whatever clients wrote; a `spec` that is not an object is their
        // mistake to fix, not a server fault.
        let Some(map) = cur.as_object_mut() else {
            let field = parts[..i].join(".");
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![(
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {field} of the scaled object is not an object"),
                    field,
                )],
            ));
        };
        if i + 1 == parts.len() {
            map.insert(p.to_string(), json!(replicas));
            break;
        }
        cur = map.entry(p.to_string()).or_insert_with(|| json!({}));
    }
    Ok(next)
}

/// Streams watch events for one collection as newline-delimited JSON.
fn watch_stream(
    app: Arc<App>,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let filter = selector_filter(&rt, query)?;
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let start = match rv_param.as_str() {
        "" | "0" => None,
        rv => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be an integer"
            ))
        })?),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let as_table = table::wants_table(accept);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut drop_rx = app.drop_watches.subscribe();
    drop_rx.mark_unchanged();
    tokio::spawn(async move {
        app.stats.active_watches.fetch_add(1, Ordering::Relaxed);
        let sent = app
            .stats
            .watch_events_of(&format!("{}.{}", rt.plural, rt.group));
        let run = WatchRun {
            sent: &sent,
            app: &app,
            rt: &rt,
            ns: ns.as_deref(),
            filter: &filter,
            as_table,
            tx: &tx,
        };
        tokio::select! {
            _ = run.run(start, send_initial || start.is_none(), send_initial, bookmarks) => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = drop_rx.changed() => {}
        }
        app.stats.active_watches.fetch_sub(1, Ordering::Relaxed);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error_response(&ApiError::internal("could not build the watch response"))
        }))
}

struct WatchRun<'a, F> {
    sent: &'a AtomicU64,
    app: &'a App,
    rt: &'a ResourceType,
    ns: Option<&'a str>,
    filter: &'a F,
    as_table: bool,
    tx: &'a mpsc::Sender<Bytes>,
}

impl<F: Fn(&Value) -> bool> WatchRun<'_, F> {
    fn matches(&self, obj: &Value) -> bool {
        let in_ns = self.ns.is_none_or(|ns| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        in_ns && (self.filter)(obj)
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        if self.as_table {
            let table = table::table(self.rt, &[obj], None, jiff::Timestamp::now());
            watch_line(kind, &table)
        } else {
            watch_line(kind, &served(self.rt, obj))
        }
    }

    async fn send(&self, b: Bytes) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.tx.send(b).await.is_ok()
    }

    async fn run(
        &self,
        start: Option<u64>,
        initial: bool,
        initial_end_bookmark: bool,
        bookmarks: bool,
    ) {
        let key = self.rt.key();
        let mut changed = self.app.store.subscribe(&key);
        let mut cursor = match start {
            Some(rv) => rv,
            None => self.app.store.current_rv(),
        };
        if initial {
            // Synthetic ADDED events for the current state, then the stream from that point.
            let Ok(page) = self.app.store.list(
                self.rt,
                &ListOptions {
                    namespace: self.ns,
                    ..Default::default()
                },
            ) else {
                return;
            };
            cursor = page.rv;
            for obj in page.items.iter().filter(|o| self.matches(o)) {
                if !self.send(self.line("ADDED", obj)).await {
                    return;
                }
            }
            if initial_end_bookmark && !self.send(self.bookmark(cursor, true)).await {
                return;
            }
        }
        let api_version = self.rt.api_version();
        let mut tick = tokio::time::interval(self.app.bookmark_interval);
        tick.tick().await;
        loop {
            changed.mark_unchanged();
            let events = match self.app.store.events_since(&key, cursor, 512) {
                Ok(e) => e,
                Err(expired) => {
                    let _ = self.send(self.error_line(&expired)).await;
                    return;
                }
            };
            if events.is_empty() {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tick.tick(), if bookmarks => {
                        let rv = self.app.store.current_rv_of(&key, cursor);
                        cursor = rv;
                        if !self.send(self.bookmark(rv, false)).await { return; }
                    }
                    _ = self.tx.closed() => return,
                }
                continue;
            }
            for e in events {
                cursor = e.rv;
                let now = self.matches(&e.object);
                let before = e.previous.as_ref().map(|p| self.matches(p));
                // A change that moves an object across a filtered watch's selector is, for that watch,
                // an arrival or a departure, as the apiserver reports it.
                let kind = match (e.kind, before, now) {
                    (EventType::Modified, Some(false), true) => EventType::Added,
                    (EventType::Modified, Some(true), false) => EventType::Deleted,
                    (_, _, false) => continue,
                    (k, _, true) => k,
                };
                let line = if kind != e.kind
                    || self.as_table
                    || e.object.get("apiVersion").and_then(Value::as_str)
                        != Some(api_version.as_str())
                {
                    self.line(kind.as_str(), &e.object)
                } else {
                    e.wire_line()
                };
                if !self.send(line).await {
                    return;
                }
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end && let Some(m) = meta.as_object_mut() {
            m.insert(
                "annotations".into(),
                json!({"k8s.io/initial-events-end": "true"}),
            );
        }
        let obj =
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        watch_line("BOOKMARK", &obj)
    }

    fn error_line(&self, err: &ApiError) -> Bytes {
        watch_line("ERROR", &err.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_like_the_apiserver() {
        let r = |ns: Option<&str>,
                 plural: &str,
                 name: Option<&str>,
                 sub: Option<&str>,
                 g: &str,
                 v: &str| {
            Some(Target::Resource(ResourcePath {
                group: g.into(),
                version: v.into(),
                plural: plural.into(),
                namespace: ns.map(String::from),
                name: name.map(String::from),
                sub: sub.map(String::from),
            }))
        };
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            r(None, "namespaces", None, None, "", "v1")
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default"),
            r(None, "namespaces", Some("default"), None, "", "v1")
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/status"),
            r(None, "namespaces", Some("x"), Some("status"), "", "v1")
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/services"),
            r(Some("x"), "services", None, None, "", "v1")
        );
        assert_eq!(
            parse_path("/apis/weir.io/v1alpha1/namespaces/d/rollouts/a/scale"),
            r(
                Some("d"),
                "rollouts",
                Some("a"),
                Some("scale"),
                "weir.io",
                "v1alpha1"
            )
        );
        assert_eq!(
            parse_path("/apis/apps/v1/replicasets"),
            r(None, "replicasets", None, None, "apps", "v1")
        );
        assert_eq!(
            parse_path("/apis/weir.io"),
            Some(Target::Group("weir.io".into()))
        );
        assert_eq!(parse_path("/nope"), None);
    }
}
