//! Real Git remotes on loopback for tests: a bare repository with a human's clone, served by
//! `git daemon` (`git://`) or by `git http-backend` behind a small HTTP server that can demand an
//! `Authorization` header and hold pushes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::gitsync::git::GitCli;

use super::support::TempDir;

/// The mirror key the Git layer tests use.
pub const KEY: &str = "demo/apps";

/// Runs the system git for test setup, isolated from the user's config; returns trimmed stdout.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Human")
        .env("GIT_AUTHOR_EMAIL", "human@example.com")
        .env("GIT_COMMITTER_NAME", "Human")
        .env("GIT_COMMITTER_EMAIL", "human@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository served from `srv/apps.git`, a human's clone of it in `work/`, and a cache
/// directory for weir.
pub struct Fixture {
    pub dir: TempDir,
    pub served: PathBuf,
    pub remote: PathBuf,
    pub work: PathBuf,
}

impl Fixture {
    pub fn new(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        let served = dir.path().join("srv");
        let remote = served.join("apps.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&served).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        run_git(&served, &["init", "-q", "--bare", "-b", "main", "apps.git"]);
        run_git(&work, &["init", "-q", "-b", "main"]);
        run_git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        Fixture {
            dir,
            served,
            remote,
            work,
        }
    }

    /// Writes `files` in the human's clone, commits them and pushes the current branch.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        for (path, content) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        run_git(&self.work, &["add", "-A"]);
        run_git(&self.work, &["commit", "-q", "-m", message]);
        run_git(&self.work, &["push", "-q", "origin", "HEAD"]);
        run_git(&self.work, &["rev-parse", "HEAD"])
    }

    /// [`Fixture::commit`] for contents built as Strings.
    pub fn commit_owned<P: AsRef<str>>(&self, message: &str, files: &[(P, String)]) -> String {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_ref(), c.as_str()))
            .collect();
        self.commit(message, &refs)
    }

    /// Commits on the remote's main after `base`, newest first: (sha, full message).
    pub fn commits_after(&self, base: &str) -> Vec<(String, String)> {
        self.remote_git(&["log", "--format=%H%x1f%B%x1e", &format!("{base}..main")])
            .split('\u{1e}')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|e| e.split_once('\u{1f}'))
            .map(|(sha, msg)| (sha.to_owned(), msg.to_owned()))
            .collect()
    }

    pub fn work_git(&self, args: &[&str]) -> String {
        run_git(&self.work, args)
    }

    pub fn remote_git(&self, args: &[&str]) -> String {
        let git_dir = format!("--git-dir={}", self.remote.display());
        let all: Vec<&str> = [git_dir.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        run_git(self.dir.path(), &all)
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn cli(&self) -> GitCli {
        GitCli::new(self.cache()).with_timeout(Duration::from_secs(30))
    }

    pub fn mirror_git(&self, git: &GitCli, args: &[&str]) -> String {
        let git_dir = format!("--git-dir={}", git.mirror_path(KEY).unwrap().display());
        let all: Vec<&str> = [git_dir.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        run_git(self.dir.path(), &all)
    }
}

/// `git daemon` on a free loopback port, serving every repository under a directory, push
/// included; killed on drop.
pub struct Daemon {
    _child: tokio::process::Child,
    port: u16,
}

impl Daemon {
    pub async fn start(base: &Path) -> Daemon {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = tokio::process::Command::new(daemon_program())
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", base.display()))
                .arg("--export-all")
                .arg("--enable=receive-pack")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start git daemon");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Daemon {
                        _child: child,
                        port,
                    };
                }
                // Exited: someone took the port between our probe and its bind; pick another.
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "git daemon did not listen");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("could not start git daemon");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

/// The `git-daemon` program. `git daemon` runs it as a child and waits, so killing `git` left the
/// daemon serving on after every test; started directly, it is the process killed on drop.
fn daemon_program() -> PathBuf {
    let out = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("run `git --exec-path` (install git: apt-get install -y git)");
    assert!(out.status.success(), "`git --exec-path` failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

#[derive(Clone)]
struct HttpState {
    root: PathBuf,
    /// `None`: anyone may fetch and push.
    accepted: Option<Arc<Vec<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    pushes: Arc<AtomicUsize>,
    hold: tokio::sync::watch::Receiver<bool>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
}

/// Smart HTTP through `git http-backend` (run per request as a CGI, no shell), answering 401
/// unless `Authorization` is one of the accepted values.
pub struct HttpRemote {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Pushes (receive-pack requests) that reached the server, held ones included.
    pub pushes: Arc<AtomicUsize>,
    hold: tokio::sync::watch::Sender<bool>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpRemote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpRemote {
    pub async fn start(root: &Path, accepted: &[&str]) -> HttpRemote {
        Self::serve(
            root,
            Some(Arc::new(accepted.iter().map(|a| (*a).to_owned()).collect())),
        )
        .await
    }

    /// A remote anyone may fetch from and push to.
    pub async fn open(root: &Path) -> HttpRemote {
        Self::serve(root, None).await
    }

    /// While held, pushes reach the server and wait; released, they fail with 503 and nothing
    /// lands. A push in flight when its client dies is what this simulates.
    pub fn hold_pushes(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// While set, every push is answered at once with 503, as a remote that is down would.
    pub fn refuse_pushes(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    pub fn push_count(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    async fn serve(root: &Path, accepted: Option<Arc<Vec<String>>>) -> HttpRemote {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pushes = Arc::new(AtomicUsize::new(0));
        let (hold, hold_rx) = tokio::sync::watch::channel(false);
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = HttpState {
            root: root.to_path_buf(),
            accepted,
            seen: Arc::clone(&seen),
            pushes: Arc::clone(&pushes),
            hold: hold_rx,
            refuse: Arc::clone(&refuse),
        };
        let router = axum::Router::new().fallback(serve_git).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        HttpRemote {
            port,
            seen,
            pushes,
            hold,
            refuse,
            task,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

async fn serve_git(State(state): State<HttpState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    state.seen.lock().unwrap().push(parts.uri.to_string());
    let authorized = match &state.accepted {
        None => true,
        Some(accepted) => parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| accepted.iter().any(|a| a == value)),
    };
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"weir-test\"")],
        )
            .into_response();
    }
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    if parts.method == axum::http::Method::POST && parts.uri.path().ends_with("/git-receive-pack") {
        state.pushes.fetch_add(1, Ordering::SeqCst);
        if state.refuse.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let mut hold = state.hold.clone();
        if *hold.borrow() {
            let _ = hold.wait_for(|held| !held).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        // http-backend allows pushes from an authenticated user only.
        .env("REMOTE_USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, variable) in [
        (header::CONTENT_TYPE.as_str(), "CONTENT_TYPE"),
        (header::CONTENT_ENCODING.as_str(), "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            cgi.env(variable, value);
        }
    }
    let mut child = cgi.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let write = async move {
        let _ = stdin.write_all(&body).await;
    };
    let read = async move {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.unwrap();
        out
    };
    let ((), out) = tokio::join!(write, read);
    child.wait().await.unwrap();
    cgi_response(&out)
}

/// Turns CGI output (headers, a blank line, the body) into a response.
fn cgi_response(raw: &[u8]) -> Response {
    let (head, body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&raw[..at], &raw[at + 2..]),
            None => (raw, &[][..]),
        },
    };
    let mut builder = Response::builder();
    let mut status = StatusCode::OK;
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("status") {
            status = value.trim()[..3]
                .parse::<u16>()
                .unwrap()
                .try_into()
                .unwrap();
        } else {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    builder
        .status(status)
        .body(Body::from(body.to_vec()))
        .unwrap()
}
