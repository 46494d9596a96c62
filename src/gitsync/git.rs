//! The Git layer of GitSync: one bare mirror per GitSync, fetched incrementally, and the commits the
//! revert writer makes and pushes.
//!
//! Everything goes through the `git` CLI, run with `tokio::process` and never through a shell, as
//! Argo CD does: `gix` cannot push, and the CLI speaks every transport and auth scheme users have.
//! [`Git`] is the seam the controller and the revert writer use; [`GitCli`] is the real one.
//!
//! **Hostile input.** URLs, refs, paths and commit ids come from custom resources, so each one is
//! checked before any process starts: no leading `-` (git would read it as an option), no control
//! characters, ref names per `git check-ref-format`, commit ids as hex, and only the `https`,
//! `http`, `ssh` and `git` transports (no `ext::`, `file://` or local paths, which would run commands
//! or read the controller's disk). `--end-of-options` and `--` separate them from options anyway, and
//! pathspecs are literal (`GIT_LITERAL_PATHSPECS`), so `:(exclude)` magic means nothing.
//!
//! **Secrets** never reach argv, a URL, a log line or an error:
//! - HTTPS: an `http.extraHeader` (`Authorization: Bearer <token>`, or `Basic` for a user name and
//!   password) set through `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` in the child's
//!   environment, which only the same user can read, unlike argv. Credential helpers are off.
//! - SSH: the key and `known_hosts` go to 0600 files in a 0700 directory that lives only as long as
//!   the command; `GIT_SSH_COMMAND` points ssh at them, with strict host key checking and batch mode.
//! - Whatever git prints on stderr has every secret replaced by `***` before it goes into an error.
//!
//! Each command runs with a cleared environment (PATH, proxy and CA variables pass through), a
//! private HOME, no system or global config, no hooks, no terminal prompt, and in its own process
//! group, which is killed when the time limit passes.
//!
//! Reverts never touch a working tree: `git merge-tree --write-tree` computes the same three-way
//! merge `git revert` and `git cherry-pick` do, and `git commit-tree` records it. Nothing is checked
//! out, so there is no worktree to lock or clean up, and no hook or filter runs. This needs git 2.45
//! or newer (`merge-tree` taking trees).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::api::gitsync::{
    GitAuthor, GitRef, SECRET_KEY_BEARER_TOKEN, SECRET_KEY_IDENTITY, SECRET_KEY_KNOWN_HOSTS,
    SECRET_KEY_PASSWORD, SECRET_KEY_USERNAME,
};

/// Time limit of one git command when none is configured.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The program run for every command unless [`GitCli::with_program`] names another.
const GIT_PROGRAM: &str = "git";
/// How much of git's stderr an error keeps; the first lines say what went wrong.
const STDERR_LIMIT: usize = 4096;
/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;
/// Longest branch or tag name accepted.
const MAX_REF_LEN: usize = 1024;
/// Longest GitSync key accepted; it becomes a directory name.
const MAX_KEY_LEN: usize = 200;
/// Where the remote's default branch (its `HEAD`) is kept in a mirror.
const DEFAULT_BRANCH_REF: &str = "refs/weir/default-branch";
/// Keeps a commit synced by id reachable, so `git gc` never drops it.
const PINNED_COMMIT_REF: &str = "refs/weir/pinned";
/// Every branch and tag, fetched when a commit cannot be fetched by id. They go outside
/// `refs/heads` and `refs/tags`, so a hostile branch named like an abbreviated commit id cannot
/// shadow that id when it is resolved.
const ALL_REFS_REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/weir/all/heads/*",
    "+refs/tags/*:refs/weir/all/tags/*",
];
/// Transports a GitSync may use. `ext::` runs commands and `file://` reads the controller's disk.
const ALLOWED_SCHEMES: [&str; 4] = ["https", "http", "ssh", "git"];

/// Config every command gets, through the environment.
const BASE_CONFIG: &[(&str, &str)] = &[
    // Hooks would run code from the cache directory; weir needs none.
    ("core.hooksPath", "/dev/null"),
    // An empty value clears the helper list: credentials come only from the GitSync's Secret.
    ("credential.helper", ""),
    // A detached gc would outlive the command and its time limit.
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    ("core.fsmonitor", "false"),
    ("init.defaultBranch", "main"),
    // Defence in depth behind the URL check: only the transports weir allows.
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
    ("protocol.http.allow", "always"),
    ("protocol.ssh.allow", "always"),
    ("protocol.git.allow", "always"),
];

/// Environment variables passed through to git: the search path, proxies and CA bundles.
const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
];

/// stderr fragments that mean the remote refused the credentials (or the host key).
const AUTH_FAILURE_MARKERS: &[&str] = &[
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "returned error: 401",
    "returned error: 403",
    "permission denied (publickey",
    "permission denied, please try again",
    "host key verification failed",
    "invalid username or password",
];

/// stderr fragments that mean a repository, ref or object does not exist.
const NOT_FOUND_MARKERS: &[&str] = &[
    "couldn't find remote ref",
    "repository not found",
    "does not appear to be a git repository",
    "not exported",
    "returned error: 404",
    "not our ref",
    "unknown revision",
    "bad revision",
    "bad object",
    "invalid object name",
    "not a valid object name",
    "invalid revision range",
];

/// Credentials for a remote, read from the Secret a GitSync names in `secretRef`.
///
/// `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum GitAuth {
    /// No credentials: public HTTPS or `git://` remotes.
    #[default]
    None,
    /// A token sent over HTTP(S) as `Authorization: Bearer <token>` (Secret key `bearerToken`).
    /// Bitbucket and Azure DevOps take tokens this way. GitHub and GitLab take a token as the
    /// password of basic authentication instead: use [`GitAuth::Basic`] with user name
    /// `x-access-token` (GitHub) or `oauth2` (GitLab).
    Token(String),
    /// HTTP(S) basic authentication (Secret keys `username` and `password`), sent as an
    /// `Authorization: Basic` header.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An SSH private key (Secret key `identity`) and the `known_hosts` lines the remote's host key
    /// must match (Secret key `known_hosts`). Host keys are always checked.
    Ssh {
        /// The private key, OpenSSH or PEM format, without a passphrase.
        private_key: String,
        /// `known_hosts` lines for the remote host.
        known_hosts: String,
    },
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitAuth::None => f.write_str("None"),
            GitAuth::Token(_) => f.write_str("Token(***)"),
            GitAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            GitAuth::Ssh { .. } => f
                .debug_struct("Ssh")
                .field("private_key", &"***")
                .field("known_hosts", &"…")
                .finish(),
        }
    }
}

impl GitAuth {
    /// Reads credentials from a Secret's data: `username` and `password`, or `bearerToken`, for
    /// HTTPS; `identity` and `known_hosts` for SSH. Surrounding whitespace (a trailing newline from
    /// `echo`) is dropped from tokens, user names and passwords.
    pub fn from_secret(data: &BTreeMap<String, ByteString>) -> Result<GitAuth, GitError> {
        let text = |key: &str| -> Result<Option<String>, GitError> {
            data.get(key)
                .map(|value| {
                    String::from_utf8(value.0.clone()).map_err(|_| GitError::InvalidCredentials {
                        reason: format!("Secret key {key:?} is not UTF-8"),
                    })
                })
                .transpose()
        };
        let username = text(SECRET_KEY_USERNAME)?;
        let password = text(SECRET_KEY_PASSWORD)?;
        let token = text(SECRET_KEY_BEARER_TOKEN)?;
        let identity = text(SECRET_KEY_IDENTITY)?;
        let known_hosts = text(SECRET_KEY_KNOWN_HOSTS)?;
        let kinds = [
            username.is_some() || password.is_some(),
            token.is_some(),
            identity.is_some(),
        ];
        if kinds.iter().filter(|present| **present).count() > 1 {
            return Err(GitError::InvalidCredentials {
                reason: "the Secret holds more than one kind of credentials; use username and \
                         password, or bearerToken, or identity and known_hosts"
                    .into(),
            });
        }
        match (username, password, token, identity, known_hosts) {
            (Some(username), Some(password), _, _, _) => Ok(GitAuth::Basic {
                username: username.trim().to_owned(),
                password: password.trim().to_owned(),
            }),
            (Some(_), None, _, _, _) | (None, Some(_), _, _, _) => {
                Err(GitError::InvalidCredentials {
                    reason: "basic authentication needs both username and password".into(),
                })
            }
            (_, _, Some(token), _, _) => Ok(GitAuth::Token(token.trim().to_owned())),
            (_, _, _, Some(private_key), Some(known_hosts)) => Ok(GitAuth::Ssh {
                private_key,
                known_hosts,
            }),
            (_, _, _, Some(_), None) => Err(GitError::InvalidCredentials {
                reason: "an SSH identity needs known_hosts: weir always checks the host key".into(),
            }),
            (None, None, None, None, _) => Err(GitError::InvalidCredentials {
                reason: "the Secret holds none of username/password, bearerToken, identity".into(),
            }),
        }
    }
}

/// Author and committer of the commits weir makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    /// Name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl From<&GitAuthor> for Author {
    fn from(author: &GitAuthor) -> Self {
        Author {
            name: author.name.clone(),
            email: author.email.clone(),
        }
    }
}

impl Author {
    fn validate(&self) -> Result<(), GitError> {
        for (what, value) in [("author name", &self.name), ("author email", &self.email)] {
            let reason = if value.trim().is_empty() {
                Some("is empty")
            } else if value
                .chars()
                .any(|c| c.is_control() || c == '<' || c == '>')
            {
                Some("contains '<', '>' or a control character")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(GitError::InvalidArgument {
                    what,
                    reason: reason.into(),
                });
            }
        }
        Ok(())
    }
}

/// What to fetch and resolve to a commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GitRefSpec {
    /// The head of a branch, e.g. `main` or `release/1.2`.
    Branch(String),
    /// A tag; annotated tags resolve to the commit they point at.
    Tag(String),
    /// A commit id: 7 to 64 hex digits (abbreviated, SHA-1 or SHA-256).
    Commit(String),
    /// The remote's default branch (its `HEAD`), for a GitSync without `ref`.
    DefaultBranch,
}

impl From<&GitRef> for GitRefSpec {
    fn from(git_ref: &GitRef) -> Self {
        match git_ref {
            GitRef::Branch(name) => GitRefSpec::Branch(name.clone()),
            GitRef::Tag(name) => GitRefSpec::Tag(name.clone()),
            GitRef::Commit(id) => GitRefSpec::Commit(id.clone()),
        }
    }
}

impl GitRefSpec {
    /// The ref a GitSync's `spec.ref` names, or the default branch when it names none.
    pub fn from_spec(git_ref: Option<&GitRef>) -> GitRefSpec {
        git_ref.map_or(GitRefSpec::DefaultBranch, GitRefSpec::from)
    }

    /// Checks the ref without running git: branch and tag names per `git check-ref-format` and
    /// never starting with `-`; commits as hex.
    pub fn validate(&self) -> Result<(), GitError> {
        match self {
            GitRefSpec::Branch(name) | GitRefSpec::Tag(name) => {
                check_ref_name(name).map_err(|reason| GitError::InvalidRef {
                    git_ref: name.clone(),
                    reason,
                })
            }
            GitRefSpec::Commit(id) => {
                check_object_id(id)
                    .map(drop)
                    .map_err(|reason| GitError::InvalidRef {
                        git_ref: id.clone(),
                        reason,
                    })
            }
            GitRefSpec::DefaultBranch => Ok(()),
        }
    }
}

/// What an entry of a commit's tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeEntryKind {
    /// A file (executable or not).
    File,
    /// A symbolic link.
    Symlink,
    /// A directory.
    Directory,
    /// A submodule (a commit of another repository).
    Submodule,
    /// Anything else, or a path that is not UTF-8.
    Other,
}

/// One entry of a commit's tree, as `git ls-tree` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// What it is.
    pub kind: TreeEntryKind,
    /// Its object id.
    pub id: String,
    /// Its size in bytes (0 for directories and submodules).
    pub size: u64,
    /// Its path from the repository root, `/`-separated.
    pub path: String,
}

/// A commit and what it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full commit id.
    pub sha: String,
    /// First line of the message.
    pub subject: String,
    /// Every file the commit changed against its first parent, not only the ones asked about, so
    /// the revert writer can see a commit that also touched something else.
    pub files: Vec<String>,
}

/// What went wrong in the Git layer. No variant's `Display` holds a secret: credentials are never
/// in arguments, URLs with a password are refused (and shown redacted), and git's stderr is
/// scrubbed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A branch, tag or commit id that git would misread or reject.
    #[error("invalid Git ref {git_ref:?}: {reason}")]
    InvalidRef {
        /// The ref as given.
        git_ref: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A repository URL weir does not use.
    #[error("invalid Git URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key, path, commit id, author or message that cannot be used.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials that cannot be used as they are (the reason names no secret).
    #[error("invalid Git credentials: {reason}")]
    InvalidCredentials {
        /// What is wrong with them.
        reason: String,
    },
    /// A git command ran past its time limit and was killed.
    #[error("git {args} timed out after {after:?}")]
    Timeout {
        /// The command's arguments.
        args: String,
        /// The time limit.
        after: Duration,
    },
    /// A git command failed for another reason.
    #[error("git {args} failed ({status}): {stderr}")]
    Command {
        /// The command's arguments.
        args: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr, without secrets.
        stderr: String,
    },
    /// The remote refused the credentials, or the SSH host key did not match `known_hosts`.
    #[error("git {args}: authentication failed: {stderr}")]
    AuthFailed {
        /// The command's arguments.
        args: String,
        /// What git printed on stderr, without secrets.
        stderr: String,
    },
    /// The repository, ref, commit or local mirror does not exist.
    #[error("not found: {what}: {detail}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// What git said, without secrets.
        detail: String,
    },
    /// The push was rejected because the remote branch moved; fetch, rebase and push again.
    #[error("push to branch {branch:?} rejected: the remote branch moved ({detail})")]
    NonFastForward {
        /// The branch pushed to.
        branch: String,
        /// git's report of the rejected ref.
        detail: String,
    },
    /// The remote refused the push for another reason, e.g. a protected branch or a hook.
    #[error("push to branch {branch:?} rejected by the remote: {reason}")]
    PushRejected {
        /// The branch pushed to.
        branch: String,
        /// The remote's reason.
        reason: String,
    },
    /// Reverting (or re-applying) a commit does not apply cleanly.
    #[error("{operation} of {commit} conflicts in {files:?}")]
    Conflict {
        /// `revert` or `cherry-pick`.
        operation: &'static str,
        /// The commit that does not apply.
        commit: String,
        /// The conflicting paths.
        files: Vec<String>,
    },
    /// The commit would change nothing: the branch already has the result.
    #[error("{what} changes nothing: the branch already has the result")]
    NothingToCommit {
        /// What would have been committed.
        what: String,
    },
    /// A file system operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Git operations of the GitSync controller and the revert writer, keyed by GitSync (`key`, e.g.
/// `namespace/name`), each with its own local mirror.
pub trait Git: Send + Sync {
    /// Creates the bare mirror of `key` on first use, then fetches only `git_ref` from `url`,
    /// incrementally; returns the full commit id `git_ref` resolves to. The URL and ref are
    /// checked before git runs. A commit that is already in the mirror needs no network.
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        url: &'a str,
        git_ref: &'a GitRefSpec,
        auth: &'a GitAuth,
    ) -> BoxFuture<'a, Result<String, GitError>>;

    /// Writes the tree of `commit` into `dest`, which must not exist or be empty. Symlinks are
    /// written as symlinks, as they are in the repository; no `.git` is written.
    fn checkout<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>>;

    /// The commits in `(from, to]` along first parents, newest first, that changed any of `paths`
    /// (literal paths or directories; none means the whole repository), each with every file it
    /// changed. A merge counts with what it changed against its first parent.
    fn commits_touching<'a>(
        &'a self,
        key: &'a str,
        from: &'a str,
        to: &'a str,
        paths: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<CommitInfo>, GitError>>;

    /// Makes one commit on top of `branch_tip` that reverts `commits` (newest first), with
    /// `author` as author and committer and `message` as message; returns its id.
    /// `Err(Conflict)` when a revert does not apply cleanly, `Err(NothingToCommit)` when the
    /// branch already has the reverted content.
    fn revert<'a>(
        &'a self,
        key: &'a str,
        branch_tip: &'a str,
        commits: &'a [String],
        author: &'a Author,
        message: &'a str,
    ) -> BoxFuture<'a, Result<String, GitError>>;

    /// Pushes `commit` to `branch` on the remote. `Err(NonFastForward)` when the remote branch
    /// moved: fetch, [`Git::rebase`] and push again.
    fn push<'a>(
        &'a self,
        key: &'a str,
        url: &'a str,
        commit: &'a str,
        branch: &'a str,
        auth: &'a GitAuth,
    ) -> BoxFuture<'a, Result<(), GitError>>;

    /// Re-applies `commit` (a revert made on an old tip) onto `new_tip`, like `git cherry-pick`,
    /// keeping its message, with `author` as author and committer; returns the new commit's id.
    /// `Err(Conflict)` when it does not apply, `Err(NothingToCommit)` when `new_tip` already has
    /// its changes (someone reverted by hand).
    fn rebase<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        new_tip: &'a str,
        author: &'a Author,
    ) -> BoxFuture<'a, Result<String, GitError>>;

    /// Every entry below `path` (a directory relative to the root; empty for the whole tree) in
    /// the tree of `commit`, recursively, directories included, from the mirror of `key` without
    /// the network.
    fn list_tree<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TreeEntry>, GitError>>;

    /// The contents of the blobs `ids`, in that order, from the mirror of `key`.
    fn read_blobs<'a>(
        &'a self,
        key: &'a str,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, GitError>>;

    /// Deletes the local mirror of `key`, for a GitSync that is gone.
    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), GitError>>;

    /// Whether `commit` is `tip` or one of its ancestors, in the mirror of `key` (which must hold
    /// `tip`; a `commit` it does not hold is not).
    fn contains<'a>(
        &'a self,
        key: &'a str,
        tip: &'a str,
        commit: &'a str,
    ) -> BoxFuture<'a, Result<bool, GitError>>;

    /// The commit `branch` pointed at when the mirror of `key` last fetched it, without the
    /// network; `None` when it was never fetched.
    fn fetched_tip<'a>(
        &'a self,
        key: &'a str,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitError>>;
}

/// [`Git`] through the `git` CLI, with mirrors under a cache directory:
/// `mirrors/<key>.git` (bare), `home/` (the private HOME of every command) and `scratch/` (index
/// files and SSH credentials, removed after each command).
pub struct GitCli {
    cache_dir: PathBuf,
    timeout: Duration,
    program: PathBuf,
    /// Operations on one mirror run one at a time, so two fetches never race on its refs.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for GitCli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCli")
            .field("cache_dir", &self.cache_dir)
            .field("timeout", &self.timeout)
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl GitCli {
    /// Git with mirrors under `cache_dir` and [`DEFAULT_COMMAND_TIMEOUT`] per command. Nothing is
    /// created until the first fetch.
    pub fn new(cache_dir: impl Into<PathBuf>) -> GitCli {
        GitCli {
            cache_dir: cache_dir.into(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            program: resolve_program(Path::new(GIT_PROGRAM)),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The same, running `program` instead of the `git` found on `PATH` (a pinned git binary, or
    /// a wrapper that records how git is called). It is started directly, never through a shell.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> GitCli {
        self.program = resolve_program(&program.into());
        self
    }

    /// The same, with `timeout` as the time limit of each git command.
    pub fn with_timeout(mut self, timeout: Duration) -> GitCli {
        self.timeout = timeout;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where the bare mirror of `key` lives.
    pub fn mirror_path(&self, key: &str) -> Result<PathBuf, GitError> {
        Ok(self
            .cache_dir
            .join("mirrors")
            .join(format!("{}.git", mirror_dir_name(key)?)))
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(key.to_owned()).or_default())
    }

    async fn private_dir(&self, name: &str) -> Result<PathBuf, GitError> {
        let dir = self.cache_dir.join(name);
        create_private_dir_all(&dir).await?;
        Ok(dir)
    }

    async fn scratch(&self) -> Result<ScratchDir, GitError> {
        ScratchDir::create(&self.private_dir("scratch").await?).await
    }

    /// Runs git and collects its output, whatever its exit status; `Err` only when it could not
    /// run or ran out of time.
    async fn exec(&self, invocation: Invocation) -> Result<Finished, GitError> {
        let shown = invocation.shown();
        let home = self.private_dir("home").await?;
        let mut command = Command::new(&self.program);
        if let Some(git_dir) = &invocation.git_dir {
            let mut arg = OsString::from("--git-dir=");
            arg.push(git_dir);
            command.arg(arg);
        }
        command.args(&invocation.args).env_clear();
        for name in PASSTHROUGH_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        command
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1");
        let config: Vec<(&str, &str)> = BASE_CONFIG
            .iter()
            .copied()
            .chain(
                invocation
                    .config
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            )
            .collect();
        command.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (index, (key, value)) in config.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{index}"), key)
                .env(format!("GIT_CONFIG_VALUE_{index}"), value);
        }
        for (name, value) in &invocation.env {
            command.env(name, value);
        }
        command
            .stdin(if invocation.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group, so a timeout also kills the helpers git starts (remote-https, ssh).
            .process_group(0);
        let mut child = command.spawn().map_err(|source| GitError::Io {
            action: format!("running git {shown}"),
            source,
        })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let input = invocation.stdin;
        let child_ref = &mut child;
        let run = async move {
            let write = async move {
                if let (Some(mut pipe), Some(input)) = (stdin, input) {
                    // git may exit without reading everything; its exit status tells why.
                    let _ = pipe.write_all(&input).await;
                }
            };
            let read_stdout = read_all(stdout);
            let read_stderr = read_all(stderr);
            let ((), out, err, status) =
                tokio::join!(write, read_stdout, read_stderr, child_ref.wait());
            (out, err, status)
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(self.timeout, run).await;
        tracing::debug!(
            command = %invocation.args.first().map(|a| a.to_string_lossy()).unwrap_or_default(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "git finished"
        );
        match outcome {
            Ok((out, err, status)) => {
                let io = |source| GitError::Io {
                    action: format!("running git {shown}"),
                    source,
                };
                let status = status.map_err(io)?;
                let stdout = out.map_err(io)?;
                let stderr = err.map_err(io)?;
                Ok(Finished {
                    status,
                    stdout,
                    stderr: scrub(&String::from_utf8_lossy(&stderr), &invocation.secrets),
                })
            }
            Err(_) => {
                if let Some(pid) = pid {
                    kill_process_group(pid).await;
                }
                let _ = child.kill().await;
                Err(GitError::Timeout {
                    args: shown,
                    after: self.timeout,
                })
            }
        }
    }

    /// Runs git and turns a failure into the matching error.
    async fn run_ok(&self, invocation: Invocation) -> Result<Finished, GitError> {
        let shown = invocation.shown();
        let finished = self.exec(invocation).await?;
        if finished.status.success() {
            Ok(finished)
        } else {
            Err(failure(shown, &finished))
        }
    }

    async fn ensure_mirror(&self, dir: &Path) -> Result<(), GitError> {
        if is_mirror(dir).await {
            return Ok(());
        }
        let parent = dir.parent().ok_or_else(|| GitError::InvalidArgument {
            what: "cache directory",
            reason: "has no parent".into(),
        })?;
        create_private_dir_all(parent).await?;
        // Initialised aside and renamed into place, so a crash never leaves a half-made mirror
        // that looks whole.
        let staging = parent.join(format!(".init-{:016x}", fastrand::u64(..)));
        self.run_ok(
            Invocation::new(None)
                .args(["init", "--bare", "--quiet", "--"])
                .arg(&staging),
        )
        .await?;
        if tokio::fs::metadata(dir).await.is_ok() {
            remove_dir_all(dir).await?;
        }
        tokio::fs::rename(&staging, dir)
            .await
            .map_err(|source| GitError::Io {
                action: format!("moving a new mirror to {}", dir.display()),
                source,
            })
    }

    async fn existing_mirror(&self, key: &str) -> Result<PathBuf, GitError> {
        let dir = self.mirror_path(key)?;
        if is_mirror(&dir).await {
            Ok(dir)
        } else {
            Err(GitError::NotFound {
                what: format!("mirror of {key:?}"),
                detail: "nothing was fetched for it yet".into(),
            })
        }
    }

    async fn fetch_refspecs(
        &self,
        mirror: &Path,
        url: &str,
        refspecs: &[String],
        auth: &PreparedAuth,
    ) -> Result<(), GitError> {
        self.run_ok(
            Invocation::new(Some(mirror))
                .args([
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--prune",
                    "--no-write-fetch-head",
                    "--no-recurse-submodules",
                    "--end-of-options",
                    url,
                ])
                .args(refspecs)
                .auth(auth),
        )
        .await
        .map(drop)
    }

    /// The full id of the commit `name` names in the mirror, if there is one.
    async fn resolve_commit(&self, mirror: &Path, name: &str) -> Result<Option<String>, GitError> {
        let finished = self
            .exec(Invocation::new(Some(mirror)).args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{name}^{{commit}}"),
            ]))
            .await?;
        let id = String::from_utf8_lossy(&finished.stdout).trim().to_owned();
        Ok((finished.status.success() && check_object_id(&id).is_ok()).then_some(id))
    }

    async fn must_resolve(&self, mirror: &Path, name: &str) -> Result<String, GitError> {
        self.resolve_commit(mirror, name)
            .await?
            .ok_or_else(|| GitError::NotFound {
                what: format!("commit {name}"),
                detail: "not in the mirror".into(),
            })
    }

    async fn prepare_auth(&self, auth: &GitAuth) -> Result<PreparedAuth, GitError> {
        let mut prepared = PreparedAuth::default();
        let header = match auth {
            GitAuth::None => None,
            GitAuth::Token(token) => {
                check_secret("token", token)?;
                prepared.secrets.push(token.clone());
                Some(format!("Bearer {token}"))
            }
            GitAuth::Basic { username, password } => {
                check_secret("user name", username)?;
                check_secret("password", password)?;
                if username.contains(':') {
                    return Err(GitError::InvalidCredentials {
                        reason: "a basic-auth user name cannot contain ':'".into(),
                    });
                }
                let encoded = base64(format!("{username}:{password}").as_bytes());
                prepared.secrets.push(password.clone());
                prepared.secrets.push(encoded.clone());
                Some(format!("Basic {encoded}"))
            }
            GitAuth::Ssh { .. } => None,
        };
        if let Some(value) = header {
            prepared.secrets.push(value.clone());
            prepared
                .config
                .push(("http.extraHeader".into(), format!("Authorization: {value}")));
        }
        let ssh_command = match auth {
            GitAuth::Ssh {
                private_key,
                known_hosts,
            } => {
                let key = normalize_key_file(private_key);
                let hosts = normalize_key_file(known_hosts);
                if key.trim().is_empty() {
                    return Err(GitError::InvalidCredentials {
                        reason: "the SSH identity is empty".into(),
                    });
                }
                if hosts.trim().is_empty() {
                    return Err(GitError::InvalidCredentials {
                        reason: "known_hosts is empty: weir always checks the host key".into(),
                    });
                }
                let dir = self.scratch().await?;
                let key_path = dir.path().join("identity");
                let hosts_path = dir.path().join("known_hosts");
                write_private_file(&key_path, key.as_bytes()).await?;
                write_private_file(&hosts_path, hosts.as_bytes()).await?;
                let command = ssh_command(Some(&key_path), &hosts_path)?;
                prepared._files = Some(dir);
                command
            }
            // Any other ssh:// remote must still pass host key checking, which fails without
            // known_hosts: there is no way to trust a host that was never named.
            _ => ssh_command(None, Path::new("/dev/null"))?,
        };
        prepared
            .env
            .push(("GIT_SSH_COMMAND".into(), ssh_command.into()));
        prepared
            .env
            .push(("GIT_SSH_VARIANT".into(), OsString::from("ssh")));
        Ok(prepared)
    }

    /// Three-way merges `ours` with `theirs` from `base` (all tree-ish); the resulting tree id,
    /// or the conflicting paths.
    async fn merge_trees(
        &self,
        mirror: &Path,
        base: &str,
        ours: &str,
        theirs: &str,
    ) -> Result<Result<String, Vec<String>>, GitError> {
        let invocation = Invocation::new(Some(mirror)).args([
            "merge-tree",
            "--write-tree",
            "-z",
            "--name-only",
            "--no-messages",
            &format!("--merge-base={base}"),
            ours,
            theirs,
        ]);
        let shown = invocation.shown();
        let finished = self.exec(invocation).await?;
        let (tree, files) = parse_merge_tree(&finished.stdout);
        match finished.status.code() {
            Some(0) if check_object_id(&tree).is_ok() => Ok(Ok(tree)),
            Some(1) => Ok(Err(files)),
            _ => Err(failure(shown, &finished)),
        }
    }

    async fn tree_of(&self, mirror: &Path, commit: &str) -> Result<String, GitError> {
        let finished = self
            .run_ok(Invocation::new(Some(mirror)).args([
                "rev-parse",
                "--verify",
                &tree_ish(commit),
            ]))
            .await?;
        Ok(String::from_utf8_lossy(&finished.stdout).trim().to_owned())
    }

    async fn commit_tree(
        &self,
        mirror: &Path,
        tree: &str,
        parent: &str,
        author: &Author,
        message: &str,
    ) -> Result<String, GitError> {
        let mut body = message.to_owned();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let finished = self
            .run_ok(
                Invocation::new(Some(mirror))
                    .args(["commit-tree", tree, "-p", parent, "-F", "-"])
                    .env("GIT_AUTHOR_NAME", &author.name)
                    .env("GIT_AUTHOR_EMAIL", &author.email)
                    .env("GIT_COMMITTER_NAME", &author.name)
                    .env("GIT_COMMITTER_EMAIL", &author.email)
                    .stdin(body.into_bytes()),
            )
            .await?;
        let id = String::from_utf8_lossy(&finished.stdout).trim().to_owned();
        check_object_id(&id).map_err(|_| GitError::Command {
            args: "commit-tree".into(),
            status: "exit 0".into(),
            stderr: format!("unexpected output {id:?}"),
        })?;
        Ok(id)
    }

    /// `git merge-base --is-ancestor`: exit 0 yes, 1 no, anything else a failure.
    async fn is_ancestor(&self, mirror: &Path, commit: &str, tip: &str) -> Result<bool, GitError> {
        let invocation = Invocation::new(Some(mirror)).args([
            "merge-base",
            "--is-ancestor",
            "--end-of-options",
            commit,
            tip,
        ]);
        let shown = invocation.shown();
        let finished = self.exec(invocation).await?;
        match finished.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failure(shown, &finished)),
        }
    }

    async fn require_parent(&self, mirror: &Path, commit: &str) -> Result<(), GitError> {
        match self.resolve_commit(mirror, &format!("{commit}^1")).await? {
            Some(_) => Ok(()),
            None => Err(GitError::InvalidArgument {
                what: "commit",
                reason: format!("{commit} has no parent (or is not in the mirror)"),
            }),
        }
    }

    async fn fetch_impl(
        &self,
        key: &str,
        url: &str,
        git_ref: &GitRefSpec,
        auth: &GitAuth,
    ) -> Result<String, GitError> {
        validate_url(url)?;
        git_ref.validate()?;
        let mirror = self.mirror_path(key)?;
        let auth = self.prepare_auth(auth).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        self.ensure_mirror(&mirror).await?;
        let tracked = match git_ref {
            GitRefSpec::Branch(name) => format!("refs/heads/{name}"),
            GitRefSpec::Tag(name) => format!("refs/tags/{name}"),
            GitRefSpec::DefaultBranch => DEFAULT_BRANCH_REF.to_owned(),
            GitRefSpec::Commit(id) => {
                return self.fetch_commit(&mirror, url, id, &auth).await;
            }
        };
        let source = match git_ref {
            GitRefSpec::DefaultBranch => "HEAD",
            _ => &tracked,
        };
        self.fetch_refspecs(&mirror, url, &[format!("+{source}:{tracked}")], &auth)
            .await?;
        self.must_resolve(&mirror, &tracked).await
    }

    async fn fetch_commit(
        &self,
        mirror: &Path,
        url: &str,
        id: &str,
        auth: &PreparedAuth,
    ) -> Result<String, GitError> {
        let id = id.to_ascii_lowercase();
        if let Some(sha) = self.resolve_commit(mirror, &id).await? {
            return Ok(sha);
        }
        if is_full_object_id(&id) {
            let pin = format!("+{id}:{PINNED_COMMIT_REF}");
            match self.fetch_refspecs(mirror, url, &[pin], auth).await {
                Ok(()) => return self.must_resolve(mirror, &id).await,
                Err(error @ (GitError::AuthFailed { .. } | GitError::Timeout { .. })) => {
                    return Err(error);
                }
                // Some servers refuse to send a commit by id; every branch and tag is next.
                Err(_) => {}
            }
        }
        let all: Vec<String> = ALL_REFS_REFSPECS.iter().map(|s| (*s).to_owned()).collect();
        self.fetch_refspecs(mirror, url, &all, auth).await?;
        let sha = self.must_resolve(mirror, &id).await?;
        self.run_ok(Invocation::new(Some(mirror)).args(["update-ref", PINNED_COMMIT_REF, &sha]))
            .await?;
        Ok(sha)
    }

    async fn checkout_impl(&self, key: &str, commit: &str, dest: &Path) -> Result<(), GitError> {
        let commit = object_id_arg("commit", commit)?;
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        match tokio::fs::read_dir(dest).await {
            Ok(mut entries) => {
                let first = entries.next_entry().await.map_err(|source| GitError::Io {
                    action: format!("reading {}", dest.display()),
                    source,
                })?;
                if first.is_some() {
                    return Err(GitError::InvalidArgument {
                        what: "checkout destination",
                        reason: format!("{} is not empty", dest.display()),
                    });
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::create_dir_all(dest)
                    .await
                    .map_err(|source| GitError::Io {
                        action: format!("creating {}", dest.display()),
                        source,
                    })?;
            }
            Err(source) => {
                return Err(GitError::Io {
                    action: format!("reading {}", dest.display()),
                    source,
                });
            }
        }
        let commit = self.must_resolve(&mirror, &commit).await?;
        // A private index, so checkouts never share (or lock) the mirror's.
        let scratch = self.scratch().await?;
        let mut work_tree = OsString::from("--work-tree=");
        work_tree.push(dest);
        self.run_ok(
            Invocation::new(Some(&mirror))
                .arg(work_tree)
                .args(["read-tree", "--reset", "-u", &tree_ish(&commit)])
                .env("GIT_INDEX_FILE", scratch.path().join("index")),
        )
        .await
        .map(drop)
    }

    async fn list_tree_impl(
        &self,
        key: &str,
        commit: &str,
        path: &str,
    ) -> Result<Vec<TreeEntry>, GitError> {
        let commit = object_id_arg("commit", commit)?;
        if !path.is_empty() {
            check_repo_path(path).map_err(|reason| GitError::InvalidArgument {
                what: "tree path",
                reason: format!("{path:?} {reason}"),
            })?;
        }
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let commit = self.must_resolve(&mirror, &commit).await?;
        let mut invocation = Invocation::new(Some(&mirror)).args([
            "ls-tree",
            "-r",
            "-t",
            "-l",
            "-z",
            "--end-of-options",
            &commit,
        ]);
        // A bare `--` with no path after it lists nothing.
        if !path.is_empty() {
            invocation = invocation.args(["--", path]);
        }
        let listed = self.run_ok(invocation).await?;
        listed
            .stdout
            .split(|byte| *byte == 0)
            .filter(|record| !record.is_empty())
            .map(parse_tree_record)
            .collect()
    }

    async fn read_blobs_impl(&self, key: &str, ids: &[String]) -> Result<Vec<Vec<u8>>, GitError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::new();
        for id in ids {
            let id = object_id_arg("blob", id)?;
            input.extend_from_slice(id.as_bytes());
            input.push(b'\n');
        }
        let mirror = self.existing_mirror(key).await?;
        let read = self
            .run_ok(
                Invocation::new(Some(&mirror))
                    .args(["cat-file", "--batch"])
                    .stdin(input),
            )
            .await?;
        parse_blob_batch(&read.stdout, ids.len())
    }

    async fn commits_touching_impl(
        &self,
        key: &str,
        from: &str,
        to: &str,
        paths: &[String],
    ) -> Result<Vec<CommitInfo>, GitError> {
        let from = object_id_arg("from commit", from)?;
        let to = object_id_arg("to commit", to)?;
        for path in paths {
            check_repo_path(path).map_err(|reason| GitError::InvalidArgument {
                what: "path",
                reason: format!("{path:?} {reason}"),
            })?;
        }
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let mut invocation = Invocation::new(Some(&mirror)).args([
            "log",
            "--first-parent",
            "--diff-merges=first-parent",
            "--no-renames",
            "--full-diff",
            "--name-only",
            "--no-color",
            "-z",
            "--format=%x00%H%x00%s",
            "--end-of-options",
            &format!("{from}..{to}"),
        ]);
        if !paths.is_empty() {
            invocation = invocation.arg("--").args(paths);
        }
        let finished = self.run_ok(invocation).await?;
        Ok(parse_log(&finished.stdout))
    }

    async fn revert_impl(
        &self,
        key: &str,
        branch_tip: &str,
        commits: &[String],
        author: &Author,
        message: &str,
    ) -> Result<String, GitError> {
        let tip = object_id_arg("branch tip", branch_tip)?;
        if commits.is_empty() {
            return Err(GitError::InvalidArgument {
                what: "commits to revert",
                reason: "none given".into(),
            });
        }
        let commits = commits
            .iter()
            .map(|commit| object_id_arg("commit to revert", commit))
            .collect::<Result<Vec<_>, _>>()?;
        author.validate()?;
        check_message(message)?;
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let tip = self.must_resolve(&mirror, &tip).await?;
        let mut resolved = Vec::with_capacity(commits.len());
        for commit in &commits {
            let commit = self.must_resolve(&mirror, commit).await?;
            self.require_parent(&mirror, &commit).await?;
            resolved.push(commit);
        }
        let tip_tree = self.tree_of(&mirror, &tip).await?;
        let mut tree = tip_tree.clone();
        for commit in &resolved {
            // Reverting C is merging C^1 into the branch with C as the base.
            let merged = self
                .merge_trees(
                    &mirror,
                    &tree_ish(commit),
                    &tree,
                    &tree_ish(&format!("{commit}^1")),
                )
                .await?;
            tree = merged.map_err(|files| GitError::Conflict {
                operation: "revert",
                commit: commit.clone(),
                files,
            })?;
        }
        if tree == tip_tree {
            return Err(GitError::NothingToCommit {
                what: format!("reverting {}", resolved.join(", ")),
            });
        }
        self.commit_tree(&mirror, &tree, &tip, author, message)
            .await
    }

    async fn rebase_impl(
        &self,
        key: &str,
        commit: &str,
        new_tip: &str,
        author: &Author,
    ) -> Result<String, GitError> {
        let commit = object_id_arg("commit to rebase", commit)?;
        let new_tip = object_id_arg("new tip", new_tip)?;
        author.validate()?;
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let commit = self.must_resolve(&mirror, &commit).await?;
        let new_tip = self.must_resolve(&mirror, &new_tip).await?;
        // Already in the branch (pushed before a restart): re-applying its diff could conflict
        // with later commits to the same lines, though there is nothing left to do.
        if self.is_ancestor(&mirror, &commit, &new_tip).await? {
            return Err(GitError::NothingToCommit {
                what: format!("re-applying {commit}, which the branch already holds"),
            });
        }
        self.require_parent(&mirror, &commit).await?;
        let tip_tree = self.tree_of(&mirror, &new_tip).await?;
        let merged = self
            .merge_trees(
                &mirror,
                &tree_ish(&format!("{commit}^1")),
                &tip_tree,
                &tree_ish(&commit),
            )
            .await?;
        let tree = merged.map_err(|files| GitError::Conflict {
            operation: "cherry-pick",
            commit: commit.clone(),
            files,
        })?;
        if tree == tip_tree {
            return Err(GitError::NothingToCommit {
                what: format!("re-applying {commit}"),
            });
        }
        let raw = self
            .run_ok(Invocation::new(Some(&mirror)).args(["cat-file", "commit", &commit]))
            .await?;
        let message = commit_message(&raw.stdout);
        self.commit_tree(&mirror, &tree, &new_tip, author, &message)
            .await
    }

    async fn push_impl(
        &self,
        key: &str,
        url: &str,
        commit: &str,
        branch: &str,
        auth: &GitAuth,
    ) -> Result<(), GitError> {
        validate_url(url)?;
        let commit = object_id_arg("commit to push", commit)?;
        check_ref_name(branch).map_err(|reason| GitError::InvalidRef {
            git_ref: branch.to_owned(),
            reason,
        })?;
        let mirror = self.existing_mirror(key).await?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let auth = self.prepare_auth(auth).await?;
        let invocation = Invocation::new(Some(&mirror))
            .args([
                "push",
                "--porcelain",
                "--no-verify",
                "--end-of-options",
                url,
                &format!("{commit}:refs/heads/{branch}"),
            ])
            .auth(&auth);
        let shown = invocation.shown();
        let finished = self.exec(invocation).await?;
        match push_rejection(&String::from_utf8_lossy(&finished.stdout)) {
            Some(PushRejection::NonFastForward(detail)) => Err(GitError::NonFastForward {
                branch: branch.to_owned(),
                detail,
            }),
            Some(PushRejection::Refused(reason)) => Err(GitError::PushRejected {
                branch: branch.to_owned(),
                reason,
            }),
            None if finished.status.success() => Ok(()),
            None => Err(failure(shown, &finished)),
        }
    }

    async fn forget_impl(&self, key: &str) -> Result<(), GitError> {
        let mirror = self.mirror_path(key)?;
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        match tokio::fs::metadata(&mirror).await {
            Ok(_) => remove_dir_all(&mirror).await,
            Err(_) => Ok(()),
        }
    }
}

impl Git for GitCli {
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        url: &'a str,
        git_ref: &'a GitRefSpec,
        auth: &'a GitAuth,
    ) -> BoxFuture<'a, Result<String, GitError>> {
        Box::pin(self.fetch_impl(key, url, git_ref, auth))
    }

    fn checkout<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(self.checkout_impl(key, commit, dest))
    }

    fn commits_touching<'a>(
        &'a self,
        key: &'a str,
        from: &'a str,
        to: &'a str,
        paths: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<CommitInfo>, GitError>> {
        Box::pin(self.commits_touching_impl(key, from, to, paths))
    }

    fn revert<'a>(
        &'a self,
        key: &'a str,
        branch_tip: &'a str,
        commits: &'a [String],
        author: &'a Author,
        message: &'a str,
    ) -> BoxFuture<'a, Result<String, GitError>> {
        Box::pin(self.revert_impl(key, branch_tip, commits, author, message))
    }

    fn push<'a>(
        &'a self,
        key: &'a str,
        url: &'a str,
        commit: &'a str,
        branch: &'a str,
        auth: &'a GitAuth,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(self.push_impl(key, url, commit, branch, auth))
    }

    fn rebase<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        new_tip: &'a str,
        author: &'a Author,
    ) -> BoxFuture<'a, Result<String, GitError>> {
        Box::pin(self.rebase_impl(key, commit, new_tip, author))
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(self.forget_impl(key))
    }

    fn list_tree<'a>(
        &'a self,
        key: &'a str,
        commit: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TreeEntry>, GitError>> {
        Box::pin(self.list_tree_impl(key, commit, path))
    }

    fn read_blobs<'a>(
        &'a self,
        key: &'a str,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, GitError>> {
        Box::pin(self.read_blobs_impl(key, ids))
    }

    fn contains<'a>(
        &'a self,
        key: &'a str,
        tip: &'a str,
        commit: &'a str,
    ) -> BoxFuture<'a, Result<bool, GitError>> {
        Box::pin(async move {
            let tip = object_id_arg("tip", tip)?;
            let commit = object_id_arg("commit", commit)?;
            let mirror = self.existing_mirror(key).await?;
            let lock = self.lock_for(key);
            let _held = lock.lock().await;
            let tip = self.must_resolve(&mirror, &tip).await?;
            // A commit the mirror lacks after fetching `tip` is not in its history.
            if self.resolve_commit(&mirror, &commit).await?.is_none() {
                return Ok(false);
            }
            self.is_ancestor(&mirror, &commit, &tip).await
        })
    }

    fn fetched_tip<'a>(
        &'a self,
        key: &'a str,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitError>> {
        Box::pin(async move {
            check_ref_name(branch).map_err(|reason| GitError::InvalidRef {
                git_ref: branch.to_owned(),
                reason,
            })?;
            let mirror = self.existing_mirror(key).await?;
            let lock = self.lock_for(key);
            let _held = lock.lock().await;
            self.resolve_commit(&mirror, &format!("refs/heads/{branch}"))
                .await
        })
    }
}

/// Checks a repository URL without running git: `https://`, `http://`, `ssh://`, `git://` or
/// scp-like `user@host:path`; no leading `-` (for the URL, the user or the host), no whitespace or
/// control characters, no password in the URL, no local paths and no `transport::` helpers.
pub fn validate_url(url: &str) -> Result<(), GitError> {
    check_url(url).map_err(|reason| GitError::InvalidUrl {
        url: redact_url(url),
        reason,
    })
}

fn check_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Err("is empty");
    }
    if url.len() > MAX_URL_LEN {
        return Err("is longer than 2048 bytes");
    }
    if url.starts_with('-') {
        return Err("starts with '-', which git would read as an option");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("contains whitespace or control characters");
    }
    let (user, host) = if let Some((scheme, rest)) = url.split_once("://") {
        if !ALLOWED_SCHEMES.contains(&scheme) {
            return Err("uses a transport other than https, http, ssh or git");
        }
        let authority = rest.split('/').next().unwrap_or_default();
        match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        }
    } else {
        // scp-like: [user@]host:path, where no '/' comes before the first ':'.
        let Some((head, path)) = url.split_once(':') else {
            return Err("is a local path; only remote repositories can be synced");
        };
        if head.contains('/') {
            return Err("is a local path; only remote repositories can be synced");
        }
        if head.contains('[') {
            return Err("has an IPv6 host in scp-like form; write it as ssh://[address]/path");
        }
        if path.is_empty() || path.starts_with(':') {
            return Err("uses a transport helper (transport::address) or names no path");
        }
        let first_segment = path.split('/').next().unwrap_or_default();
        if first_segment.contains('@') {
            return Err(
                "looks like it holds credentials; put them in the Secret named by \
                        secretRef, or use the ssh:// form",
            );
        }
        match head.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, head),
        }
    };
    if user.is_some_and(|user| user.contains(':')) {
        return Err("holds a password; put credentials in the Secret named by secretRef");
    }
    if user.is_some_and(|user| user.is_empty() || user.starts_with('-')) {
        return Err("has an empty user or one starting with '-'");
    }
    if host.is_empty() {
        return Err("names no host");
    }
    if host.starts_with('-') {
        return Err("has a host starting with '-', which ssh would read as an option");
    }
    Ok(())
}

/// The URL with the password of any `user:password@` replaced by `***`, for error messages.
fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{prefix}{user}{hidden}@{host}{tail}")
        }
        None if prefix.is_empty() && rest.contains('@') => "<URL with '@' hidden>".to_owned(),
        None => url.to_owned(),
    }
}

/// Checks a branch or tag name the way `git check-ref-format` checks `refs/heads/<name>`, and
/// refuses a leading `-`.
fn check_ref_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_REF_LEN {
        return Err("is longer than 1024 bytes");
    }
    if name.starts_with('-') {
        return Err("starts with '-', which git would read as an option");
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err("contains a space, a control character or one of ~ ^ : ? * [ \\");
    }
    if name.contains("..") {
        return Err("contains '..'");
    }
    if name.contains("@{") || name == "@" {
        return Err("contains '@{' or is '@'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("has an empty path component");
    }
    if name.ends_with('.') {
        return Err("ends with '.'");
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Err("has a component starting with '.' or ending with '.lock'");
    }
    Ok(())
}

/// Checks a commit id: 7 to 64 hex digits. Returns it in lower case.
fn check_object_id(id: &str) -> Result<String, &'static str> {
    if !(7..=64).contains(&id.len()) {
        return Err("a commit id has 7 to 64 hex digits");
    }
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a commit id has only hex digits");
    }
    Ok(id.to_ascii_lowercase())
}

fn is_full_object_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn object_id_arg(what: &'static str, id: &str) -> Result<String, GitError> {
    check_object_id(id).map_err(|reason| GitError::InvalidArgument {
        what,
        reason: format!("{id:?}: {reason}"),
    })
}

/// A path inside the repository, as given to `commits_touching`.
fn check_repo_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty (use \".\" for the whole repository)");
    }
    if path.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    if path.starts_with('/') {
        return Err("is absolute; paths are relative to the repository root");
    }
    if path.split('/').any(|part| part == "..") {
        return Err("leaves the repository ('..')");
    }
    Ok(())
}

fn check_message(message: &str) -> Result<(), GitError> {
    let reason = if message.trim().is_empty() {
        Some("is empty")
    } else if message.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(GitError::InvalidArgument {
            what: "commit message",
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

/// Credentials go into an HTTP header, so line breaks would forge other headers.
fn check_secret(what: &str, value: &str) -> Result<(), GitError> {
    if value.is_empty() {
        return Err(GitError::InvalidCredentials {
            reason: format!("the {what} is empty"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(GitError::InvalidCredentials {
            reason: format!("the {what} contains control characters"),
        });
    }
    Ok(())
}

/// The directory name of a key: letters, digits and `-` as they are, every other byte as `_xx`,
/// so distinct keys never share a mirror and no key can climb out of the cache.
fn mirror_dir_name(key: &str) -> Result<String, GitError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(GitError::InvalidArgument {
            what: "GitSync key",
            reason: format!("must have 1 to {MAX_KEY_LEN} bytes"),
        });
    }
    let mut name = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("_{byte:02x}"));
        }
    }
    Ok(name)
}

/// One record of `git ls-tree -l -z`: `<mode> <type> <id> <size>\t<path>`.
fn parse_tree_record(record: &[u8]) -> Result<TreeEntry, GitError> {
    let malformed = || GitError::Command {
        args: "ls-tree".into(),
        status: "exit status: 0".into(),
        stderr: format!(
            "unexpected output {:?}",
            String::from_utf8_lossy(&record[..record.len().min(200)])
        ),
    };
    let tab = record
        .iter()
        .position(|byte| *byte == b'\t')
        .ok_or_else(malformed)?;
    let (head, path) = (&record[..tab], &record[tab + 1..]);
    let head = std::str::from_utf8(head).map_err(|_| malformed())?;
    let mut fields = head.split_ascii_whitespace();
    let (Some(mode), Some(_), Some(id), Some(size)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed());
    };
    let path = std::str::from_utf8(path).ok();
    let kind = match (mode, path) {
        (_, None) => TreeEntryKind::Other,
        ("100644" | "100755", _) => TreeEntryKind::File,
        ("120000", _) => TreeEntryKind::Symlink,
        ("040000", _) => TreeEntryKind::Directory,
        ("160000", _) => TreeEntryKind::Submodule,
        _ => TreeEntryKind::Other,
    };
    Ok(TreeEntry {
        kind,
        id: id.to_owned(),
        size: size.parse().unwrap_or(0),
        path: path
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&record[tab + 1..]).into_owned()),
    })
}

/// The output of `git cat-file --batch` for `expected` blobs: `<id> blob <size>\n<contents>\n`
/// each.
fn parse_blob_batch(mut output: &[u8], expected: usize) -> Result<Vec<Vec<u8>>, GitError> {
    let malformed = |what: String| GitError::Command {
        args: "cat-file --batch".into(),
        status: "exit status: 0".into(),
        stderr: what,
    };
    let mut blobs = Vec::with_capacity(expected);
    while blobs.len() < expected {
        let end = output
            .iter()
            .position(|byte| *byte == b'\n')
            .ok_or_else(|| malformed("output ended early".into()))?;
        let header = String::from_utf8_lossy(&output[..end]).into_owned();
        let mut fields = header.split(' ');
        let (Some(_), Some("blob"), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(format!("not a blob: {header}")));
        };
        let size: usize = size
            .parse()
            .map_err(|_| malformed(format!("bad header: {header}")))?;
        let body = output
            .get(end + 1..end + 1 + size)
            .ok_or_else(|| malformed("output ended inside a blob".into()))?;
        blobs.push(body.to_vec());
        output = output.get(end + 2 + size..).unwrap_or_default();
    }
    Ok(blobs)
}

/// `<commit>^{tree}`: the tree of a commit, as merge-tree and read-tree take it.
fn tree_ish(commit: &str) -> String {
    format!("{commit}^{{tree}}")
}

/// Standard base64 with padding, for the basic-auth header.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (n >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `s` with every secret replaced by `***`, cut to [`STDERR_LIMIT`] bytes.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut scrubbed = text.trim().to_owned();
    // Longest first, so a secret that contains another is hidden whole.
    let mut ordered: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in ordered {
        scrubbed = scrubbed.replace(secret.as_str(), "***");
    }
    if scrubbed.len() > STDERR_LIMIT {
        let mut end = STDERR_LIMIT;
        while !scrubbed.is_char_boundary(end) {
            end -= 1;
        }
        scrubbed.truncate(end);
        scrubbed.push('…');
    }
    scrubbed
}

/// The error a failed command stands for, from what it printed.
fn failure(args: String, finished: &Finished) -> GitError {
    let lower = finished.stderr.to_ascii_lowercase();
    if AUTH_FAILURE_MARKERS.iter().any(|m| lower.contains(m)) {
        GitError::AuthFailed {
            args,
            stderr: finished.stderr.clone(),
        }
    } else if NOT_FOUND_MARKERS.iter().any(|m| lower.contains(m)) {
        GitError::NotFound {
            what: format!("git {args}"),
            detail: finished.stderr.clone(),
        }
    } else {
        GitError::Command {
            args,
            status: describe_status(finished.status),
            stderr: finished.stderr.clone(),
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".to_owned(),
    }
}

enum PushRejection {
    NonFastForward(String),
    Refused(String),
}

/// The rejected ref in `git push --porcelain` output, if any: lines of
/// `<flag>\t<from>:<to>\t<summary>`, where `!` marks a rejection.
fn push_rejection(stdout: &str) -> Option<PushRejection> {
    let line = stdout.lines().find(|line| line.starts_with('!'))?;
    let summary = line.split('\t').nth(2).unwrap_or(line).trim().to_owned();
    if summary.starts_with("[rejected]") {
        Some(PushRejection::NonFastForward(summary))
    } else {
        Some(PushRejection::Refused(summary))
    }
}

/// Parses `git log -z --name-only --format=%x00%H%x00%s`: each commit is an empty field, its id,
/// its subject, then its file names (the first after a newline); file names are never empty.
fn parse_log(stdout: &[u8]) -> Vec<CommitInfo> {
    let text = String::from_utf8_lossy(stdout);
    let mut fields = text.split('\0').peekable();
    let mut commits = Vec::new();
    while let Some(field) = fields.next() {
        if !field.is_empty() {
            continue;
        }
        let (Some(sha), Some(subject)) = (fields.next(), fields.next()) else {
            break;
        };
        let mut files = Vec::new();
        while let Some(file) = fields.next_if(|f| !f.is_empty()) {
            let file = file.strip_prefix('\n').unwrap_or(file);
            if !file.is_empty() {
                files.push(file.to_owned());
            }
        }
        commits.push(CommitInfo {
            sha: sha.to_owned(),
            subject: subject.to_owned(),
            files,
        });
    }
    commits
}

/// Parses `git merge-tree --write-tree -z --name-only --no-messages`: the tree id, then the
/// conflicting paths (each once, sorted).
fn parse_merge_tree(stdout: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8_lossy(stdout);
    let mut fields = text.split('\0');
    let tree = fields.next().unwrap_or_default().trim().to_owned();
    let mut files: Vec<String> = fields
        .take_while(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    files.sort();
    files.dedup();
    (tree, files)
}

/// The message of a raw commit object: everything after the first blank line.
fn commit_message(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split_once("\n\n")
        .map(|(_, message)| message.to_owned())
        .unwrap_or_default()
}

/// Key files from Secrets often lose their last newline or carry `\r`; OpenSSH needs neither.
fn normalize_key_file(text: &str) -> String {
    let mut normalized = text.replace('\r', "");
    if !normalized.ends_with('\n') {
        normalized.push('\n');
    }
    normalized
}

/// The `GIT_SSH_COMMAND` git runs (through `sh -c`, which is why every path is quoted): no user
/// ssh config, no prompts, only the given key, and the host key checked against `known_hosts`.
fn ssh_command(identity: Option<&Path>, known_hosts: &Path) -> Result<String, GitError> {
    let mut command = String::from(
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
         -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile=",
    );
    command.push_str(&ssh_path_arg(known_hosts)?);
    if let Some(identity) = identity {
        command.push_str(" -i ");
        command.push_str(&ssh_path_arg(identity)?);
    }
    Ok(command)
}

/// A path for the ssh command line: `%` doubled (ssh expands `%` tokens in these options), then
/// single-quoted for the shell git runs it with.
fn ssh_path_arg(path: &Path) -> Result<String, GitError> {
    let text = path.to_str().ok_or_else(|| GitError::InvalidArgument {
        what: "cache directory",
        reason: "is not UTF-8, which the ssh command line needs".into(),
    })?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // ssh splits UserKnownHostsFile at spaces, whatever the quoting.
        return Err(GitError::InvalidArgument {
            what: "cache directory",
            reason: format!("{text:?} contains whitespace, which ssh cannot take"),
        });
    }
    Ok(format!(
        "'{}'",
        text.replace('%', "%%").replace('\'', r"'\''")
    ))
}

/// One git command: its arguments and what it runs with.
#[derive(Default)]
struct Invocation {
    git_dir: Option<PathBuf>,
    args: Vec<OsString>,
    /// Config entries on top of [`BASE_CONFIG`]; may hold secrets, which is why they go through
    /// the environment.
    config: Vec<(String, String)>,
    env: Vec<(String, OsString)>,
    secrets: Vec<String>,
    stdin: Option<Vec<u8>>,
}

impl Invocation {
    fn new(git_dir: Option<&Path>) -> Invocation {
        Invocation {
            git_dir: git_dir.map(Path::to_path_buf),
            ..Invocation::default()
        }
    }

    fn arg(mut self, arg: impl Into<OsString>) -> Invocation {
        self.args.push(arg.into());
        self
    }

    fn args<I, S>(mut self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn env(mut self, name: &str, value: impl Into<OsString>) -> Invocation {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    fn stdin(mut self, input: Vec<u8>) -> Invocation {
        self.stdin = Some(input);
        self
    }

    fn auth(mut self, auth: &PreparedAuth) -> Invocation {
        self.config.extend(auth.config.iter().cloned());
        self.env.extend(auth.env.iter().cloned());
        self.secrets.extend(auth.secrets.iter().cloned());
        self
    }

    /// The arguments as errors show them (the mirror path is left out; secrets are never here).
    fn shown(&self) -> String {
        self.args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Credentials turned into what a git command needs.
#[derive(Default)]
struct PreparedAuth {
    config: Vec<(String, String)>,
    env: Vec<(String, OsString)>,
    secrets: Vec<String>,
    /// The SSH key files; removed when this is dropped.
    _files: Option<ScratchDir>,
}

/// What a finished command printed.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    /// Without secrets, cut to [`STDERR_LIMIT`].
    stderr: String,
}

/// A private directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    async fn create(parent: &Path) -> Result<ScratchDir, GitError> {
        let path = parent.join(format!("{:016x}", fastrand::u64(..)));
        let mut builder = tokio::fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&path).await.map_err(|source| GitError::Io {
            action: format!("creating {}", path.display()),
            source,
        })?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover holds at most an index or a key in a 0700 directory.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `program` as a path: a bare name is looked up on `PATH` once, here. A command whose program is a
/// path can be started with `posix_spawn` (no copy of the parent's page tables); given a bare name
/// with `PATH` set in its environment, the standard library falls back to `fork`, whose cost grows
/// with weir's memory (45 ms per git command beside a 10,000-object emulator, eight commands before
/// a revert's push). A name not found is kept, and fails when run, as before.
fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() != 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
        .unwrap_or_else(|| program.to_path_buf())
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn create_private_dir_all(dir: &Path) -> Result<(), GitError> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir).await.map_err(|source| GitError::Io {
        action: format!("creating {}", dir.display()),
        source,
    })
}

async fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), GitError> {
    let io = |source| GitError::Io {
        action: format!("writing {}", path.display()),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io)?;
    file.write_all(contents).await.map_err(io)?;
    file.flush().await.map_err(io)
}

async fn remove_dir_all(dir: &Path) -> Result<(), GitError> {
    tokio::fs::remove_dir_all(dir)
        .await
        .map_err(|source| GitError::Io {
            action: format!("removing {}", dir.display()),
            source,
        })
}

async fn is_mirror(dir: &Path) -> bool {
    let head = tokio::fs::metadata(dir.join("HEAD")).await;
    let objects = tokio::fs::metadata(dir.join("objects")).await;
    head.is_ok_and(|m| m.is_file()) && objects.is_ok_and(|m| m.is_dir())
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut buffer).await?;
    }
    Ok(buffer)
}

/// Kills the process group a timed-out git leads, so helpers it started (git-remote-https, ssh)
/// stop too. The leader is not reaped yet, so its id cannot have been reused. Best effort: without
/// a `kill` program only git itself is killed.
async fn kill_process_group(pid: u32) {
    let mut kill = Command::new("kill");
    kill.args(["-s", "KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), kill.status()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_check_ref_format_and_never_start_with_a_dash() {
        let cases = [
            ("main", true),
            ("release/1.2", true),
            ("feature/übersicht", true),
            ("v1.0.0", true),
            ("--upload-pack=touch /tmp/pwned", false),
            ("-main", false),
            ("", false),
            ("a b", false),
            ("main\n", false),
            ("x\u{7f}", false),
            ("a..b", false),
            ("a~1", false),
            ("a^", false),
            ("a:b", false),
            ("a?", false),
            ("a*", false),
            ("a[b", false),
            ("a\\b", false),
            ("@", false),
            ("a@{1}", false),
            ("/main", false),
            ("main/", false),
            ("a//b", false),
            ("main.", false),
            (".hidden", false),
            ("a/.b", false),
            ("main.lock", false),
            ("a.lock/b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_ref_name(name).is_ok(), ok, "{name:?}");
            let result = GitRefSpec::Branch(name.into()).validate();
            assert_eq!(result.is_ok(), ok, "{name:?}");
            if !ok {
                assert!(matches!(result, Err(GitError::InvalidRef { .. })));
            }
        }
    }

    #[test]
    fn commit_refs_are_hex_ids() {
        let sha256 = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases = [
            ("0123abc", true),
            ("0123ABCDEF0123abcdef0123abcdef0123abcdef", true),
            (sha256.as_str(), true),
            ("0123ab", false),
            (too_long.as_str(), false),
            ("--upload-pack=x", false),
            ("0123abg", false),
            ("HEAD~1", false),
        ];
        for (id, ok) in cases {
            let result = GitRefSpec::Commit(id.to_string()).validate();
            assert_eq!(result.is_ok(), ok, "{id:?}");
        }
        assert_eq!(check_object_id("ABCDEF0"), Ok("abcdef0".to_owned()));
    }

    #[test]
    fn urls_are_remote_and_cannot_smuggle_options_or_credentials() {
        let cases = [
            ("https://git.example.com/team/apps.git", true),
            ("http://127.0.0.1:8080/apps.git", true),
            ("ssh://git@git.example.com:2222/team/apps.git", true),
            ("git://127.0.0.1:9418/apps.git", true),
            ("git@github.com:team/apps.git", true),
            ("github.com:team/apps.git", true),
            ("ssh://[::1]:22/apps.git", true),
            ("", false),
            ("--upload-pack=touch /tmp/pwned", false),
            ("-oProxyCommand=touch", false),
            ("ssh://-oProxyCommand=touch/apps", false),
            ("ssh://-user@host/apps", false),
            ("-host:apps", false),
            ("git@-oProxyCommand=x:apps", false),
            ("ext::sh -c touch% /tmp/pwned", false),
            ("ext::sh", false),
            ("fd::17", false),
            ("file:///etc", false),
            ("/srv/git/apps.git", false),
            ("./apps.git", false),
            ("apps.git", false),
            ("https://user:pa55w0rd@host/apps.git", false),
            ("ssh://user:pa55w0rd@host/apps.git", false),
            ("user:pa55w0rd@host:apps.git", false),
            ("https://host/apps\n.git", false),
            ("https://host/ apps.git", false),
            ("https:///apps.git", false),
            ("git@[::1]:apps.git", false),
            ("HTTPS://host/apps.git", false),
        ];
        for (url, ok) in cases {
            let result = validate_url(url);
            assert_eq!(result.is_ok(), ok, "{url:?}: {result:?}");
            if let Err(error) = result {
                assert!(matches!(error, GitError::InvalidUrl { .. }), "{url:?}");
                assert!(!error.to_string().contains("pa55w0rd"), "{error}");
            }
        }
    }

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        let cases = [
            (
                "https://user:secret@host/apps.git",
                "https://user:***@host/apps.git",
            ),
            ("https://host/apps.git", "https://host/apps.git"),
            ("ssh://git@host/apps.git", "ssh://git@host/apps.git"),
            ("user:secret@host:apps.git", "user:***@host:apps.git"),
            ("host:a/b@c", "<URL with '@' hidden>"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn keys_map_to_distinct_directory_names_inside_the_cache() {
        let cases = [
            ("demo/apps", "demo_2fapps"),
            ("demo_2fapps", "demo_5f2fapps"),
            ("../../etc", "_2e_2e_2f_2e_2e_2fetc"),
            ("a.b", "a_2eb"),
        ];
        for (key, name) in cases {
            assert_eq!(mirror_dir_name(key).unwrap(), name);
        }
        assert!(mirror_dir_name("").is_err());
        assert!(mirror_dir_name(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        let git = GitCli::new("/cache");
        assert_eq!(
            git.mirror_path("demo/apps").unwrap(),
            Path::new("/cache/mirrors/demo_2fapps.git")
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:pa55word", "YWxpY2U6cGE1NXdvcmQ="),
        ];
        for (input, encoded) in cases {
            assert_eq!(base64(input.as_bytes()), encoded, "{input:?}");
        }
    }

    #[test]
    fn scrub_hides_every_secret_and_bounds_the_length() {
        let secrets = vec!["tok".to_owned(), "token-123".to_owned(), String::new()];
        assert_eq!(
            scrub("  bad token-123 and tok here \n", &secrets),
            "bad *** and *** here"
        );
        let long = "é".repeat(STDERR_LIMIT);
        let scrubbed = scrub(&long, &[]);
        assert!(scrubbed.len() <= STDERR_LIMIT + '…'.len_utf8());
        assert!(scrubbed.ends_with('…'));
    }

    fn finished(code: i32, stderr: &str) -> Finished {
        use std::os::unix::process::ExitStatusExt;
        Finished {
            status: ExitStatus::from_raw(code << 8),
            stdout: Vec::new(),
            stderr: stderr.to_owned(),
        }
    }

    fn kind(error: &GitError) -> &'static str {
        match error {
            GitError::AuthFailed { .. } => "auth",
            GitError::NotFound { .. } => "not found",
            GitError::Command { .. } => "command",
            _ => "other",
        }
    }

    #[test]
    fn tree_listings_and_blob_batches_are_parsed() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let cases = [
            (
                format!("100644 blob {id}     12\tapps/a b.yaml"),
                TreeEntryKind::File,
                12,
                "apps/a b.yaml",
            ),
            (
                format!("100755 blob {id}      3\trun.sh"),
                TreeEntryKind::File,
                3,
                "run.sh",
            ),
            (
                format!("120000 blob {id}      6\tlink"),
                TreeEntryKind::Symlink,
                6,
                "link",
            ),
            (
                format!("040000 tree {id}       -\tapps"),
                TreeEntryKind::Directory,
                0,
                "apps",
            ),
            (
                format!("160000 commit {id}       -\tvendor"),
                TreeEntryKind::Submodule,
                0,
                "vendor",
            ),
        ];
        for (record, kind, size, path) in cases {
            let entry = parse_tree_record(record.as_bytes()).unwrap();
            assert_eq!(
                (entry.kind, entry.size, entry.path.as_str()),
                (kind, size, path),
                "{record}"
            );
            assert_eq!(entry.id, id);
        }
        let mut not_utf8 = format!("100644 blob {id} 1\t").into_bytes();
        not_utf8.extend_from_slice(b"bad\xff.yaml");
        assert_eq!(
            parse_tree_record(&not_utf8).unwrap().kind,
            TreeEntryKind::Other
        );
        assert!(parse_tree_record(b"100644 blob").is_err());

        let batch = format!("{id} blob 3\na\nb\n{id} blob 0\n\n");
        assert_eq!(
            parse_blob_batch(batch.as_bytes(), 2).unwrap(),
            vec![b"a\nb".to_vec(), Vec::new()]
        );
        assert!(parse_blob_batch(format!("{id} missing\n").as_bytes(), 1).is_err());
        assert!(parse_blob_batch(format!("{id} blob 9\nshort\n").as_bytes(), 1).is_err());
    }

    #[test]
    fn failures_are_classified_from_stderr() {
        let cases = [
            (
                "fatal: could not read Username for 'https://h': terminal prompts disabled",
                "auth",
            ),
            (
                "fatal: unable to access 'https://h/': The requested URL returned error: 403",
                "auth",
            ),
            ("git@h: Permission denied (publickey).", "auth"),
            ("Host key verification failed.", "auth"),
            (
                "fatal: couldn't find remote ref refs/heads/nope",
                "not found",
            ),
            (
                "fatal: remote error: access denied or repository not exported: /x.git",
                "not found",
            ),
            ("fatal: Invalid revision range a..b", "not found"),
            ("fatal: the remote end hung up unexpectedly", "command"),
        ];
        for (stderr, expected) in cases {
            let error = failure("fetch".into(), &finished(128, stderr));
            assert_eq!(kind(&error), expected, "{stderr}: {error:?}");
        }
    }

    #[test]
    fn push_porcelain_rejections_are_told_apart() {
        let moved = "To git://h/r.git\n!\tabc:refs/heads/main\t[rejected] (fetch first)\nDone\n";
        assert!(matches!(
            push_rejection(moved),
            Some(PushRejection::NonFastForward(d)) if d == "[rejected] (fetch first)"
        ));
        let hook = "!\tabc:refs/heads/main\t[remote rejected] (protected branch)\n";
        assert!(matches!(
            push_rejection(hook),
            Some(PushRejection::Refused(r)) if r.contains("protected branch")
        ));
        let ok = "To git://h/r.git\n*\tabc:refs/heads/new\t[new branch]\nDone\n";
        assert!(push_rejection(ok).is_none());
    }

    #[test]
    fn log_output_parses_into_commits_with_all_their_files() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let raw = format!(
            "\0{a}\0merge feature\0\napp/f\0\0{b}\0empty\0\0{c}\0two files\0\napp/new\nline\0other/o\0"
        );
        let commits = parse_log(raw.as_bytes());
        assert_eq!(
            commits,
            vec![
                CommitInfo {
                    sha: a,
                    subject: "merge feature".into(),
                    files: vec!["app/f".into()]
                },
                CommitInfo {
                    sha: b,
                    subject: "empty".into(),
                    files: vec![]
                },
                CommitInfo {
                    sha: c,
                    subject: "two files".into(),
                    files: vec!["app/new\nline".into(), "other/o".into()]
                },
            ]
        );
        assert!(parse_log(b"").is_empty());
    }

    #[test]
    fn merge_tree_output_gives_the_tree_and_conflicting_paths() {
        let cases: [(&[u8], &str, Vec<&str>); 3] = [
            (
                b"1111111111111111111111111111111111111111\0",
                "1111111111111111111111111111111111111111",
                vec![],
            ),
            (
                b"2222222222222222222222222222222222222222\0b/y\0a/x\0a/x\0",
                "2222222222222222222222222222222222222222",
                vec!["a/x", "b/y"],
            ),
            (
                b"3333333333333333333333333333333333333333\0a\0\0messages",
                "3333333333333333333333333333333333333333",
                vec!["a"],
            ),
        ];
        for (raw, tree, files) in cases {
            assert_eq!(
                parse_merge_tree(raw),
                (
                    tree.to_owned(),
                    files.iter().map(|f| (*f).to_owned()).collect()
                )
            );
        }
    }

    #[test]
    fn commit_messages_are_read_whole_from_raw_commits() {
        let raw = b"tree 1\nparent 2\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nRevert x\n\nBody\n";
        assert_eq!(commit_message(raw), "Revert x\n\nBody\n");
        assert_eq!(commit_message(b"tree 1\n"), "");
    }

    #[test]
    fn the_ssh_command_pins_key_and_host_keys_and_quotes_paths() {
        let command = ssh_command(
            Some(Path::new("/cache/scratch/it's%x/identity")),
            Path::new("/cache/scratch/it's%x/known_hosts"),
        )
        .unwrap();
        assert!(command.starts_with("ssh -F /dev/null -o BatchMode=yes"));
        assert!(command.contains("-o StrictHostKeyChecking=yes"));
        assert!(command.contains("-o IdentitiesOnly=yes"));
        assert!(command.contains(r"UserKnownHostsFile='/cache/scratch/it'\''s%%x/known_hosts'"));
        assert!(command.ends_with(r"-i '/cache/scratch/it'\''s%%x/identity'"));
        assert!(ssh_command(None, Path::new("/cache dir/kh")).is_err());
    }

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn credentials_are_read_from_secret_keys() {
        let cases = [
            (
                secret(&[("username", "alice"), ("password", "pw\n")]),
                Some(GitAuth::Basic {
                    username: "alice".into(),
                    password: "pw".into(),
                }),
            ),
            (
                secret(&[("bearerToken", " tok\n")]),
                Some(GitAuth::Token("tok".into())),
            ),
            (
                secret(&[
                    ("identity", "KEY"),
                    ("known_hosts", "host ssh-ed25519 AAAA"),
                ]),
                Some(GitAuth::Ssh {
                    private_key: "KEY".into(),
                    known_hosts: "host ssh-ed25519 AAAA".into(),
                }),
            ),
            (secret(&[("identity", "KEY")]), None),
            (secret(&[("username", "alice")]), None),
            (secret(&[("bearerToken", "t"), ("password", "p")]), None),
            (secret(&[("unrelated", "x")]), None),
        ];
        for (data, expected) in cases {
            let result = GitAuth::from_secret(&data);
            assert_eq!(result.as_ref().ok(), expected.as_ref(), "{data:?}");
        }
    }

    #[test]
    fn debug_output_of_credentials_shows_no_secret() {
        let auths = [
            GitAuth::Token("tok-secret".into()),
            GitAuth::Basic {
                username: "alice".into(),
                password: "pw-secret".into(),
            },
            GitAuth::Ssh {
                private_key: "key-secret".into(),
                known_hosts: "hosts".into(),
            },
        ];
        for auth in auths {
            let shown = format!("{auth:?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }

    #[test]
    fn authors_and_messages_that_git_would_mangle_are_refused() {
        let cases = [
            (("weir", "weir@localhost"), true),
            (("", "weir@localhost"), false),
            (("weir", " "), false),
            (("we<ir", "weir@localhost"), false),
            (("weir", "weir@localhost>"), false),
            (("weir\n", "weir@localhost"), false),
        ];
        for ((name, email), ok) in cases {
            let author = Author {
                name: name.into(),
                email: email.into(),
            };
            assert_eq!(author.validate().is_ok(), ok, "{author:?}");
        }
        assert!(check_message("Revert x").is_ok());
        assert!(check_message(" \n").is_err());
        assert!(check_message("a\0b").is_err());
    }

    #[test]
    fn repository_paths_stay_inside_the_repository() {
        let cases = [
            ("apps/demo", true),
            (".", true),
            (":(exclude)apps", true),
            ("", false),
            ("/etc", false),
            ("apps/../../x", false),
            ("a\nb", false),
        ];
        for (path, ok) in cases {
            assert_eq!(check_repo_path(path).is_ok(), ok, "{path:?}");
        }
    }

    #[test]
    fn spec_refs_map_to_ref_specs() {
        let cases = [
            (None, GitRefSpec::DefaultBranch),
            (
                Some(GitRef::Branch("main".into())),
                GitRefSpec::Branch("main".into()),
            ),
            (Some(GitRef::Tag("v1".into())), GitRefSpec::Tag("v1".into())),
            (
                Some(GitRef::Commit("0123abc".into())),
                GitRefSpec::Commit("0123abc".into()),
            ),
        ];
        for (git_ref, expected) in cases {
            assert_eq!(GitRefSpec::from_spec(git_ref.as_ref()), expected);
        }
    }
}
