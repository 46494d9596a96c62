//! Turns the `path` of a Git checkout into the objects a GitSync applies.
//!
//! A directory holding a kustomization is built with kustomize; any other directory contributes
//! every YAML and JSON file below it. The checkout is hostile input: nothing outside it is read,
//! every file and the whole render are size-limited before anything is parsed, YAML nesting and
//! alias expansion are bounded, and every error names the file (and line, when known) so that it
//! can be shown to the user as a Ready=False condition.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::git::{TreeEntry, TreeEntryKind};
use crate::api::gitsync::DEFAULT_TIMEOUT;

/// Label naming the GitSync that applied an object.
pub const LABEL_GITSYNC_NAME: &str = "weir.io/gitsync-name";
/// Label naming the namespace of the GitSync that applied an object.
pub const LABEL_GITSYNC_NAMESPACE: &str = "weir.io/gitsync-namespace";
/// Annotation `<namespace>/<name>` of the GitSync that applied an object. Unlike the labels it has
/// no length limit, so it is always complete.
pub const ANNOTATION_GITSYNC: &str = "weir.io/gitsync";
/// Annotation naming the file an object came from, as `<file>#L<line>` (just `<file>`, the
/// kustomization, for kustomize output).
pub const ANNOTATION_SOURCE: &str = "weir.io/source";
/// File names that make a directory a kustomization, in the order kustomize looks for them.
pub const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Default [`RenderOptions::max_file_bytes`]: 1 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 20;
/// Default [`RenderOptions::max_total_bytes`]: 64 MiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 64 << 20;
/// Default [`RenderOptions::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default [`RenderOptions::max_objects`].
pub const DEFAULT_MAX_OBJECTS: usize = 20_000;
/// Default [`RenderOptions::max_nodes`].
pub const DEFAULT_MAX_NODES: usize = 2_000_000;
/// Default [`RenderOptions::max_walk_entries`].
pub const DEFAULT_MAX_WALK_ENTRIES: usize = 100_000;

/// Events an alias may replay per file. Manifests use anchors for a repeated env block or two;
/// "billion laughs" needs millions.
const MAX_ALIAS_REPLAYED_EVENTS: usize = 100_000;
/// Aliases inside replayed aliases; each level can add `max_depth` to the nesting of the result,
/// and deserializing that nesting recurses.
const MAX_ALIAS_REPLAY_DEPTH: usize = 8;
/// kustomize's stderr kept for the error message; the rest is drained and dropped.
const MAX_STDERR_BYTES: usize = 64 * 1024;
/// Longest kustomize message put into an error (and so into a condition).
const MAX_MESSAGE_CHARS: usize = 1024;
/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE_CHARS: usize = 63;

/// One object to apply, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// The object, with namespace defaulted and weir's labels and annotations added.
    pub object: serde_json::Value,
    /// The file it came from, relative to the repository root (the kustomization file for
    /// kustomize output).
    pub source: String,
    /// 1-based line where its document (or `items` entry) starts; 0 for kustomize output.
    pub line: usize,
}

/// How to run kustomize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KustomizeCommand {
    /// `<program> kustomize DIR`.
    Kubectl(PathBuf),
    /// A standalone kustomize binary: `<program> build DIR`.
    Kustomize(PathBuf),
}

impl Default for KustomizeCommand {
    fn default() -> Self {
        Self::Kubectl(PathBuf::from("kubectl"))
    }
}

impl KustomizeCommand {
    fn program(&self) -> &Path {
        match self {
            Self::Kubectl(program) | Self::Kustomize(program) => program,
        }
    }

    fn subcommand(&self) -> &'static str {
        match self {
            Self::Kubectl(_) => "kustomize",
            Self::Kustomize(_) => "build",
        }
    }
}

/// What to render and the limits that keep a hostile repository from exhausting the controller.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    /// Namespace for namespaced objects that name none; `None` means the GitSync's own namespace
    /// (`gitsync.0`), as `spec.targetNamespace` documents.
    pub target_namespace: Option<String>,
    /// The GitSync's namespace and name, written into labels and annotations.
    pub gitsync: (String, String),
    /// Largest file read.
    pub max_file_bytes: u64,
    /// Largest sum of all files read, and largest kustomize output.
    pub max_total_bytes: u64,
    /// Deepest nesting of YAML collections.
    pub max_depth: usize,
    /// Most objects rendered.
    pub max_objects: usize,
    /// Most YAML nodes (mapping keys, values, sequence items) over the whole render, alias
    /// expansions included; bounds memory where byte limits cannot.
    pub max_nodes: usize,
    /// Most directory entries looked at while walking a plain directory.
    pub max_walk_entries: usize,
    /// Time limit for the whole render, kustomize included.
    pub timeout: Duration,
    /// How to run kustomize.
    pub kustomize: KustomizeCommand,
}

impl RenderOptions {
    /// Default limits for the GitSync `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            target_namespace: None,
            gitsync: (namespace.into(), name.into()),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_objects: DEFAULT_MAX_OBJECTS,
            max_nodes: DEFAULT_MAX_NODES,
            max_walk_entries: DEFAULT_MAX_WALK_ENTRIES,
            timeout: DEFAULT_TIMEOUT,
            kustomize: KustomizeCommand::default(),
        }
    }

    fn namespace_for_unnamespaced(&self) -> &str {
        self.target_namespace.as_deref().unwrap_or(&self.gitsync.0)
    }
}

/// Why a path in a kustomization was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceProblem {
    /// A URL or Git reference: weir renders only what is in the synced commit.
    #[error("is remote; only files in the repository can be referenced")]
    Remote,
    /// It leaves the repository, lexically or through a symlink.
    #[error("resolves outside the repository")]
    OutsideRoot,
    /// Nothing is there.
    #[error("does not exist")]
    Missing,
}

/// Why a render failed. `Display` names the file, relative to the repository root, and the line
/// when known: the message is shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file is not valid YAML (or trips a parser limit other than nesting).
    #[error("{file}:{line}:{column}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is a scalar or a sequence, not an object.
    #[error("{file}:{line}: document is not a Kubernetes object (a mapping)")]
    NotAnObject {
        /// The file.
        file: String,
        /// Line of the document.
        line: usize,
    },
    /// An object has no `kind`.
    #[error("{file}:{line}: object has no kind")]
    MissingKind {
        /// The file.
        file: String,
        /// Line of the object.
        line: usize,
    },
    /// An object has no `apiVersion`.
    #[error("{file}:{line}: object has no apiVersion")]
    MissingApiVersion {
        /// The file.
        file: String,
        /// Line of the object.
        line: usize,
    },
    /// An object has no `metadata.name`; server-side apply needs one.
    #[error("{file}:{line}: object has no metadata.name")]
    MissingName {
        /// The file.
        file: String,
        /// Line of the object.
        line: usize,
    },
    /// A metadata field weir writes or reads has the wrong type.
    #[error("{}: {field} must be {expected}", at(.file, *.line))]
    InvalidMetadata {
        /// The file.
        file: String,
        /// Line of the object; 0 for kustomize output.
        line: usize,
        /// e.g. `metadata.labels`.
        field: &'static str,
        /// e.g. `a mapping`.
        expected: &'static str,
    },
    /// Two objects with the same group, kind, namespace and name; applying both would let the
    /// later one silently win.
    #[error("{}: {object} is also defined at {first}", at(.file, *.line))]
    Duplicate {
        /// The file of the second definition.
        file: String,
        /// Its line.
        line: usize,
        /// e.g. `Deployment demo/web`.
        object: String,
        /// `file#Lline` of the first definition.
        first: String,
    },
    /// A plain directory holds a kustomization further down, which would be applied as an object.
    #[error(
        "{file}: kustomization below the synced path; set path to its directory, or reference it \
         from a kustomization at the synced path"
    )]
    NestedKustomization {
        /// The kustomization file.
        file: String,
    },
    /// kustomize failed.
    #[error("{}: kustomize failed: {message}", at(.file, *.line))]
    Kustomize {
        /// The kustomization file the error is about (the synced one when kustomize does not say).
        file: String,
        /// Line of the offending field when known, else 0.
        line: usize,
        /// kustomize's message, with the checkout's absolute path removed.
        message: String,
    },
    /// A kustomization references a path weir will not let kustomize read.
    #[error("{file}:{line}: {reference:?} {problem}")]
    KustomizationReference {
        /// The kustomization file.
        file: String,
        /// Line of the reference.
        line: usize,
        /// The reference as written.
        reference: String,
        /// What is wrong with it.
        problem: ReferenceProblem,
    },
    /// kustomize could not be started.
    #[error("could not run {program}: {source}")]
    KustomizeSpawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The GitSync's `path` is absolute, contains `..`, or resolves outside the repository.
    #[error("path {path:?} must be relative and stay inside the repository")]
    PathEscapes {
        /// The path as written.
        path: String,
    },
    /// A symlink points outside the repository. It is refused rather than skipped, and its
    /// target is never read.
    #[error("{path}: symlink to {target} points outside the repository")]
    Symlink {
        /// The symlink.
        path: String,
        /// Its target as written.
        target: String,
    },
    /// A file is larger than `max_file_bytes`; it was not read.
    #[error("{file}: {bytes} bytes is over the limit of {limit} bytes per file")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The files read so far (or kustomize's output) exceed `max_total_bytes`.
    #[error("{file}: the render exceeds the limit of {limit} bytes in total ({bytes} bytes)")]
    TotalTooLarge {
        /// The file that crossed the limit (the kustomization for kustomize output).
        file: String,
        /// Bytes so far.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// YAML collections nested deeper than `max_depth`.
    #[error("{}: nested deeper than {limit} levels", at(.file, *.line))]
    TooDeep {
        /// The file.
        file: String,
        /// Line where the limit was crossed.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// More YAML nodes than `max_nodes`, counting alias expansions.
    #[error("{file}: the render exceeds the limit of {limit} YAML nodes")]
    TooComplex {
        /// The file that crossed the limit.
        file: String,
        /// The limit.
        limit: usize,
    },
    /// More objects than `max_objects`.
    #[error("{count} objects is over the limit of {limit}")]
    TooMany {
        /// Objects counted when the render stopped.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The synced directory has more entries than `max_walk_entries`.
    #[error("{path}: more than {limit} files and directories")]
    TooManyFiles {
        /// The synced path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The render took longer than `timeout`.
    #[error("rendering took longer than {after:?}")]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Relative to the repository root.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The blocking render task ended without a result.
    #[error("render task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl RenderError {
    /// The file (relative to the repository root) and 1-based line the error is about. The line
    /// is 0 when only the file is known.
    pub fn file_line(&self) -> Option<(String, usize)> {
        match self {
            Self::Yaml { file, line, .. }
            | Self::NotAnObject { file, line }
            | Self::MissingKind { file, line }
            | Self::MissingApiVersion { file, line }
            | Self::MissingName { file, line }
            | Self::InvalidMetadata { file, line, .. }
            | Self::Duplicate { file, line, .. }
            | Self::Kustomize { file, line, .. }
            | Self::KustomizationReference { file, line, .. }
            | Self::TooDeep { file, line, .. } => Some((file.clone(), *line)),
            Self::NestedKustomization { file }
            | Self::TooLarge { file, .. }
            | Self::TotalTooLarge { file, .. }
            | Self::TooComplex { file, .. } => Some((file.clone(), 0)),
            Self::Symlink { path, .. } | Self::Io { path, .. } => Some((path.clone(), 0)),
            Self::KustomizeSpawn { .. }
            | Self::PathEscapes { .. }
            | Self::TooMany { .. }
            | Self::TooManyFiles { .. }
            | Self::Timeout { .. }
            | Self::Task(_) => None,
        }
    }
}

/// `file:line`, or `file` when the line is unknown.
fn at(file: &str, line: usize) -> String {
    if line == 0 {
        file.to_owned()
    } else {
        format!("{file}:{line}")
    }
}

/// Render `root.join(path)`: kustomize when that directory holds a kustomization, else every
/// `*.yaml`, `*.yml` and `*.json` file below it (sorted by path, recursive, skipping names that
/// start with a dot), multi-document, empty documents skipped, `kind: List` expanded. `path` may
/// also name a single file.
///
/// Namespaced objects without a namespace get [`RenderOptions::target_namespace`] (default: the
/// GitSync's namespace); cluster-scoped kinds are known built-ins, weir's own, and those of
/// `scope: Cluster` CRDs in the render. Every object is
/// labelled with the GitSync ([`LABEL_GITSYNC_NAME`], [`LABEL_GITSYNC_NAMESPACE`], the name label
/// only when the name fits a label value) and annotated with [`ANNOTATION_GITSYNC`] and
/// [`ANNOTATION_SOURCE`]. CustomResourceDefinitions come first, then Namespaces, then everything
/// else in file order.
pub async fn render(
    root: &Path,
    path: &str,
    opts: &RenderOptions,
) -> Result<Vec<RenderedObject>, RenderError> {
    // `None`: a timeout too long to represent, i.e. none.
    let deadline = Instant::now().checked_add(opts.timeout);
    match tokio::time::timeout(opts.timeout, render_within(root, path, opts, deadline)).await {
        Ok(result) => result,
        Err(_) => Err(RenderError::Timeout {
            after: opts.timeout,
        }),
    }
}

async fn render_within(
    root: &Path,
    path: &str,
    opts: &RenderOptions,
    deadline: Option<Instant>,
) -> Result<Vec<RenderedObject>, RenderError> {
    let checkout = Checkout::open(root)?;
    let target = checkout.resolve_path_field(path)?;
    let allowance = Allowance::new(opts.clone(), deadline);
    let rendered = match kustomization_in(&target) {
        Some(kustomization) => {
            render_kustomization(checkout, target, kustomization, allowance).await?
        }
        None => tokio::task::spawn_blocking(move || render_plain(&checkout, &target, allowance))
            .await
            .map_err(RenderError::Task)??,
    };
    finish(rendered, opts)
}

/// The repository checkout, by its canonical path, so that "inside" is a prefix test.
#[derive(Clone, Debug)]
struct Checkout {
    root: PathBuf,
}

impl Checkout {
    fn open(root: &Path) -> Result<Self, RenderError> {
        let root = fs::canonicalize(root).map_err(|source| RenderError::Io {
            path: ".".to_owned(),
            source,
        })?;
        Ok(Self { root })
    }

    /// `path` as shown to users: relative to the root, `/`-separated.
    fn relative(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let parts: Vec<_> = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy())
            .collect();
        if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        }
    }

    fn io_error(&self, path: &Path) -> impl FnOnce(io::Error) -> RenderError + '_ {
        let path = self.relative(path);
        move |source| RenderError::Io { path, source }
    }

    /// The GitSync's `path` field: relative, without `..`, and inside the checkout after symlinks.
    fn resolve_path_field(&self, path: &str) -> Result<PathBuf, RenderError> {
        let escapes = || RenderError::PathEscapes {
            path: path.to_owned(),
        };
        check_path_field(path)?;
        let joined = self.root.join(path);
        let resolved = fs::canonicalize(&joined).map_err(|source| RenderError::Io {
            path: path.to_owned(),
            source,
        })?;
        if resolved.starts_with(&self.root) {
            Ok(resolved)
        } else {
            Err(escapes())
        }
    }

    /// Where the symlink `link` leads, when that is inside the checkout; `None` when it leads
    /// nowhere. `link`'s parent must be canonical. The target is checked lexically first so that
    /// a link straight out of the checkout is refused without touching what it points at.
    fn follow_symlink(&self, link: &Path) -> Result<Option<PathBuf>, RenderError> {
        let target = fs::read_link(link).map_err(self.io_error(link))?;
        let parent = link.parent().unwrap_or(&self.root);
        let refused = || RenderError::Symlink {
            path: self.relative(link),
            target: target.display().to_string(),
        };
        if !lexically_normal(&parent.join(&target)).starts_with(&self.root) {
            return Err(refused());
        }
        match fs::canonicalize(link) {
            Ok(resolved) if resolved.starts_with(&self.root) => Ok(Some(resolved)),
            Ok(_) => Err(refused()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RenderError::Io {
                path: self.relative(link),
                source,
            }),
        }
    }

    /// A path written in a kustomization in `dir` (canonical), resolved to a canonical path
    /// inside the checkout.
    fn resolve_reference(&self, dir: &Path, reference: &str) -> Result<PathBuf, ReferenceProblem> {
        if is_remote(reference) {
            return Err(ReferenceProblem::Remote);
        }
        let lexical = lexically_normal(&dir.join(reference));
        if !lexical.starts_with(&self.root) {
            return Err(ReferenceProblem::OutsideRoot);
        }
        match fs::canonicalize(&lexical) {
            Ok(resolved) if resolved.starts_with(&self.root) => Ok(resolved),
            Ok(_) => Err(ReferenceProblem::OutsideRoot),
            Err(_) => Err(ReferenceProblem::Missing),
        }
    }
}

/// The manifest files of the directory `path` in a commit's tree (as [`Git::list_tree`] lists
/// it), sorted and filtered as the render of a checkout walks them: every `*.yaml`, `*.yml` and
/// `*.json` file below it, skipping names that start with a dot. Their contents can then be read
/// from git's object database and rendered with [`render_files`], with no checkout written.
///
/// `None` when the tree needs a checkout to render, or to report its problem the same way:
/// `path` is not a directory, there is a kustomization, a symlink, an entry of another kind, or
/// a file or a sum of files over the limits.
///
/// [`Git::list_tree`]: super::git::Git::list_tree
pub fn plain_tree_files<'t>(
    entries: &'t [TreeEntry],
    path: &str,
    opts: &RenderOptions,
) -> Option<Vec<&'t TreeEntry>> {
    let target = tree_directory(path)?;
    let below = |entry: &'t TreeEntry| -> Option<&'t str> {
        if target.is_empty() {
            Some(entry.path.as_str())
        } else {
            entry.path.strip_prefix(target.as_str())?.strip_prefix('/')
        }
    };
    let is_dir = target.is_empty()
        || entries
            .iter()
            .any(|e| e.path == target && e.kind == TreeEntryKind::Directory);
    if !is_dir {
        return None;
    }
    let mut files = Vec::new();
    let (mut seen, mut bytes) = (0usize, 0u64);
    for entry in entries {
        let Some(relative) = below(entry) else {
            continue;
        };
        seen += 1;
        if seen > opts.max_walk_entries {
            return None;
        }
        if relative.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        let name = relative.rsplit('/').next().unwrap_or(relative);
        if KUSTOMIZATION_FILE_NAMES.contains(&name) {
            return None;
        }
        match entry.kind {
            TreeEntryKind::Directory | TreeEntryKind::Submodule => {}
            TreeEntryKind::Symlink | TreeEntryKind::Other => return None,
            TreeEntryKind::File if is_manifest_name(Path::new(name)) => {
                bytes = bytes.saturating_add(entry.size);
                if entry.size > opts.max_file_bytes || bytes > opts.max_total_bytes {
                    return None;
                }
                files.push(entry);
            }
            TreeEntryKind::File => {}
        }
    }
    files.sort_by(|a, b| Path::new(&a.path).cmp(Path::new(&b.path)));
    Some(files)
}

/// A GitSync's `path` field as a path inside a commit's tree: `/`-separated, without `.` or empty
/// parts (empty for the root). `None` when [`check_path_field`] refuses it.
pub fn tree_directory(path: &str) -> Option<String> {
    check_path_field(path).ok()?;
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    Some(parts.join("/"))
}

/// Renders manifest files whose contents are already in memory (`(path, contents)`, in the
/// order [`plain_tree_files`] gives), with the same parsing, limits, labels and order as
/// [`render`] of a plain directory.
pub async fn render_files(
    files: Vec<(String, Vec<u8>)>,
    opts: &RenderOptions,
) -> Result<Vec<RenderedObject>, RenderError> {
    let deadline = Instant::now().checked_add(opts.timeout);
    let allowance = Allowance::new(opts.clone(), deadline);
    let files: Vec<ManifestFile> = files
        .into_iter()
        .map(|(shown, bytes)| ManifestFile {
            shown,
            contents: Contents::InMemory(bytes),
        })
        .collect();
    let rendered = tokio::task::spawn_blocking(move || parse_all(&files, allowance));
    match tokio::time::timeout(opts.timeout, rendered).await {
        Ok(joined) => finish(joined.map_err(RenderError::Task)??, opts),
        Err(_) => Err(RenderError::Timeout {
            after: opts.timeout,
        }),
    }
}

/// Checks a GitSync's `path` field as text, before anything is fetched: relative, with no `..`
/// component and no control characters. [`render`] checks it again against the checkout, where a
/// symlink could still lead outside.
pub fn check_path_field(path: &str) -> Result<(), RenderError> {
    let plain = !path.chars().any(char::is_control)
        && Path::new(path)
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir));
    if plain {
        Ok(())
    } else {
        Err(RenderError::PathEscapes {
            path: path.to_owned(),
        })
    }
}

/// `path` with `.` and `..` resolved as text, without asking the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other.as_os_str()),
        }
    }
    normal
}

/// kustomize fetches these over the network; weir renders only what the synced commit holds.
fn is_remote(reference: &str) -> bool {
    reference.contains("://")
        || [
            "git@",
            "git::",
            "github.com/",
            "gitlab.com/",
            "bitbucket.org/",
        ]
        .iter()
        .any(|prefix| reference.starts_with(prefix))
}

/// The kustomization file in `dir`, if any.
fn kustomization_in(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|candidate| fs::symlink_metadata(candidate).is_ok())
}

/// The render-wide limits, and how much of them has been used.
struct Allowance {
    opts: RenderOptions,
    deadline: Option<Instant>,
    bytes: u64,
    nodes: usize,
    objects: usize,
}

impl Allowance {
    fn new(opts: RenderOptions, deadline: Option<Instant>) -> Self {
        Self {
            opts,
            deadline,
            bytes: 0,
            nodes: 0,
            objects: 0,
        }
    }

    fn check_time(&self) -> Result<(), RenderError> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() > deadline)
        {
            Err(RenderError::Timeout {
                after: self.opts.timeout,
            })
        } else {
            Ok(())
        }
    }

    /// Accounts for a file of `len` bytes about to be read (or handed to kustomize).
    fn charge_file(&mut self, file: &str, len: u64) -> Result<(), RenderError> {
        if len > self.opts.max_file_bytes {
            return Err(RenderError::TooLarge {
                file: file.to_owned(),
                bytes: len,
                limit: self.opts.max_file_bytes,
            });
        }
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.opts.max_total_bytes {
            return Err(RenderError::TotalTooLarge {
                file: file.to_owned(),
                bytes: self.bytes,
                limit: self.opts.max_total_bytes,
            });
        }
        Ok(())
    }

    fn charge_nodes(&mut self, file: &str, nodes: usize) -> Result<(), RenderError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.opts.max_nodes {
            return Err(RenderError::TooComplex {
                file: file.to_owned(),
                limit: self.opts.max_nodes,
            });
        }
        Ok(())
    }

    fn charge_object(&mut self) -> Result<(), RenderError> {
        self.objects += 1;
        if self.objects > self.opts.max_objects {
            return Err(RenderError::TooMany {
                count: self.objects,
                limit: self.opts.max_objects,
            });
        }
        Ok(())
    }

    /// Parser settings for the next file: the remaining node allowance, and Kubernetes' YAML
    /// dialect (YAML 1.1 octals, so that `defaultMode: 0644` means 420 as it does for kubectl).
    fn yaml_options(&self) -> serde_saphyr::Options {
        let depth = self.opts.max_depth;
        let nodes = self.opts.max_nodes.saturating_sub(self.nodes);
        // Every document may be an object; more than that would cross the object limit anyway.
        let documents = self.opts.max_objects.saturating_sub(self.objects);
        serde_saphyr::options! {
            with_snippet: false,
            legacy_octal_numbers: true,
            budget: serde_saphyr::budget! {
                max_depth: depth,
                // One past the depth limit, so that the budget (which knows the line) reports
                // deep flow collections before the parser's own limit does.
                flow_nesting_limit: depth.saturating_add(1),
                max_nodes: nodes,
                max_documents: documents,
                max_aliases: MAX_ALIAS_REPLAYED_EVENTS,
            },
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: MAX_ALIAS_REPLAYED_EVENTS,
                max_replay_stack_depth: MAX_ALIAS_REPLAY_DEPTH,
            },
        }
    }

    /// Maps a parse error of `file` to the limit it tripped, or to a YAML error.
    fn yaml_error(&self, file: &str, error: &serde_saphyr::Error) -> RenderError {
        use serde_saphyr::budget::BudgetBreach;
        use serde_saphyr::localizer::ExternalMessageSource;

        let (line, column) = error.location().map_or((0, 0), |location| {
            (to_usize(location.line()), to_usize(location.column()))
        });
        let mut inner = error;
        while let serde_saphyr::Error::AliasError { error, .. }
        | serde_saphyr::Error::WithSnippet { error, .. } = inner
        {
            inner = error;
        }
        let too_deep = match inner {
            serde_saphyr::Error::Budget {
                breach: BudgetBreach::Nodes { .. },
                ..
            } => {
                return RenderError::TooComplex {
                    file: file.to_owned(),
                    limit: self.opts.max_nodes,
                };
            }
            serde_saphyr::Error::Budget {
                breach: BudgetBreach::Documents { documents },
                ..
            } => {
                return RenderError::TooMany {
                    count: self.objects.saturating_add(*documents),
                    limit: self.opts.max_objects,
                };
            }
            serde_saphyr::Error::Budget {
                breach: BudgetBreach::Depth { .. },
                ..
            } => true,
            serde_saphyr::Error::ExternalMessage { source, .. } => matches!(
                source.as_ref(),
                ExternalMessageSource::Parser(scan)
                    if matches!(scan.kind(), serde_saphyr::granit_parser::ErrorKind::RecursionLimitExceeded)
            ),
            _ => false,
        };
        if too_deep {
            return RenderError::TooDeep {
                file: file.to_owned(),
                line,
                limit: self.opts.max_depth,
            };
        }
        let message = error.to_string();
        // The location is in the error's own fields; keep the message short.
        let message = match message.split_once(" at line ") {
            Some((text, _)) => text.to_owned(),
            None => message,
        };
        RenderError::Yaml {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Fewest manifest files a plain render parses on more than one thread: below it, the threads
/// cost more than they save.
const PARALLEL_MIN_FILES: usize = 64;
/// Most threads a plain render parses on.
const MAX_PARSE_THREADS: usize = 4;

/// Renders a plain directory (or a single file).
fn render_plain(
    checkout: &Checkout,
    target: &Path,
    allowance: Allowance,
) -> Result<Vec<RenderedObject>, RenderError> {
    let files = if target.is_dir() {
        manifest_files(checkout, target, &allowance)?
    } else {
        vec![ManifestFile {
            shown: checkout.relative(target),
            contents: Contents::OnDisk(target.to_owned()),
        }]
    };
    parse_all(&files, allowance)
}

/// Parses `files` into objects, in file order, on up to [`MAX_PARSE_THREADS`] threads when there
/// are enough of them to be worth it.
fn parse_all(
    files: &[ManifestFile],
    mut allowance: Allowance,
) -> Result<Vec<RenderedObject>, RenderError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_PARSE_THREADS);
    if threads < 2 || files.len() < PARALLEL_MIN_FILES {
        let mut own = Allowance::new(allowance.opts.clone(), allowance.deadline);
        let parsed = parse_files(files, &mut own);
        return replay(files, vec![parsed], &mut allowance);
    }
    // Contiguous runs of files, one per thread, so that the results join in file order.
    let per_thread = files.len().div_ceil(threads);
    let parsed: Vec<Vec<Result<ParsedFile, RenderError>>> = std::thread::scope(|scope| {
        let running: Vec<_> = files
            .chunks(per_thread)
            .map(|run| {
                let mut own = Allowance::new(allowance.opts.clone(), allowance.deadline);
                scope.spawn(move || parse_files(run, &mut own))
            })
            .collect();
        running
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    replay(files, parsed, &mut allowance)
}

/// What one manifest file held, and what reading it cost.
struct ParsedFile {
    bytes: u64,
    nodes: usize,
    objects: Vec<(Value, usize)>,
}

/// Reads and parses `files` in order against `allowance`, up to and including the first error.
fn parse_files(
    files: &[ManifestFile],
    allowance: &mut Allowance,
) -> Vec<Result<ParsedFile, RenderError>> {
    let mut parsed = Vec::with_capacity(files.len());
    for file in files {
        let bytes_before = allowance.bytes;
        let nodes_before = allowance.nodes;
        let result = allowance
            .check_time()
            .and_then(|()| file.text(allowance))
            .and_then(|text| parse_manifests(&text, &file.shown, allowance))
            .map(|objects| ParsedFile {
                bytes: allowance.bytes - bytes_before,
                nodes: allowance.nodes - nodes_before,
                objects,
            });
        let failed = result.is_err();
        parsed.push(result);
        if failed {
            break;
        }
    }
    parsed
}

/// Joins the files parsed by each thread in file order, charging each file to the one
/// render-wide `allowance` as if the files had been parsed one after the other: the totals are
/// enforced over the whole render, and the first problem in file order is the one reported.
/// A thread checked only its own files against the limits, so a limit crossed by the sum
/// shows up here.
fn replay(
    files: &[ManifestFile],
    parsed: Vec<Vec<Result<ParsedFile, RenderError>>>,
    allowance: &mut Allowance,
) -> Result<Vec<RenderedObject>, RenderError> {
    let mut rendered = Vec::new();
    for (file, result) in files.iter().zip(parsed.into_iter().flatten()) {
        let parsed = result?;
        allowance.charge_file(&file.shown, parsed.bytes)?;
        allowance.charge_nodes(&file.shown, parsed.nodes)?;
        for (object, line) in parsed.objects {
            allowance.charge_object()?;
            rendered.push(RenderedObject {
                object,
                source: file.shown.clone(),
                line,
            });
        }
    }
    Ok(rendered)
}

/// A manifest file: its path as shown (through any symlinked directories), and where its
/// text is.
struct ManifestFile {
    shown: String,
    contents: Contents,
}

/// Where the text of a manifest file is.
enum Contents {
    /// In the checkout, by canonical path.
    OnDisk(PathBuf),
    /// Read from git's object database.
    InMemory(Vec<u8>),
}

impl ManifestFile {
    /// The file's text, charged to `allowance`; an oversized file is never read.
    fn text<'f>(&'f self, allowance: &mut Allowance) -> Result<Cow<'f, str>, RenderError> {
        match &self.contents {
            Contents::OnDisk(real) => read_checked(real, &self.shown, allowance).map(Cow::Owned),
            Contents::InMemory(bytes) => {
                allowance
                    .charge_file(&self.shown, u64::try_from(bytes.len()).unwrap_or(u64::MAX))?;
                std::str::from_utf8(bytes)
                    .map(Cow::Borrowed)
                    .map_err(|error| not_utf8(&self.shown, bytes, error.valid_up_to()))
            }
        }
    }
}

/// Every manifest file below `start`, sorted by path. Symlinks are followed only inside the
/// checkout, and each directory is walked once so that symlink loops end.
fn manifest_files(
    checkout: &Checkout,
    start: &Path,
    allowance: &Allowance,
) -> Result<Vec<ManifestFile>, RenderError> {
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut visited = HashSet::from([start.to_owned()]);
    // (shown path relative to the root, canonical directory)
    let start_shown = start
        .strip_prefix(&checkout.root)
        .unwrap_or(Path::new(""))
        .to_owned();
    let mut pending = vec![(start_shown, start.to_owned())];
    let mut entries_seen = 0usize;
    while let Some((shown_dir, real_dir)) = pending.pop() {
        allowance.check_time()?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(&real_dir).map_err(checkout.io_error(&real_dir))? {
            entries_seen += 1;
            if entries_seen > allowance.opts.max_walk_entries {
                return Err(RenderError::TooManyFiles {
                    path: checkout.relative(start),
                    limit: allowance.opts.max_walk_entries,
                });
            }
            entries.push(entry.map_err(checkout.io_error(&real_dir))?);
        }
        // In name order, so that which of two paths to one directory is walked does not depend
        // on the file system.
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let link = real_dir.join(&name);
            let shown = shown_dir.join(&name);
            let file_type = entry.file_type().map_err(checkout.io_error(&link))?;
            let (real, metadata) = if file_type.is_symlink() {
                match checkout.follow_symlink(&link)? {
                    Some(real) => {
                        let metadata = fs::metadata(&real).map_err(checkout.io_error(&link))?;
                        (real, metadata)
                    }
                    // Dangling: nothing to read, and nothing outside the checkout either.
                    None => continue,
                }
            } else {
                let metadata = entry.metadata().map_err(checkout.io_error(&link))?;
                (link, metadata)
            };
            if metadata.is_dir() {
                if visited.insert(real.clone()) {
                    pending.push((shown, real));
                }
            } else if KUSTOMIZATION_FILE_NAMES.iter().any(|known| name == *known) {
                return Err(RenderError::NestedKustomization {
                    file: checkout.relative(&checkout.root.join(&shown)),
                });
            } else if is_manifest_name(&shown) {
                files.push((shown, real));
            }
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|(shown, real)| ManifestFile {
            shown: checkout.relative(&checkout.root.join(shown)),
            contents: Contents::OnDisk(real),
        })
        .collect())
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            ["yaml", "yml", "json"]
                .iter()
                .any(|known| extension.eq_ignore_ascii_case(known))
        })
}

/// Reads a file inside the checkout after checking its size, so an oversized file is never read.
fn read_checked(
    real: &Path,
    shown: &str,
    allowance: &mut Allowance,
) -> Result<String, RenderError> {
    let io_error = |source| RenderError::Io {
        path: shown.to_owned(),
        source,
    };
    let metadata = fs::metadata(real).map_err(io_error)?;
    if !metadata.is_file() {
        // A FIFO or device would block or never end.
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    allowance.charge_file(shown, metadata.len())?;
    let file = fs::File::open(real).map_err(io_error)?;
    let mut bytes = Vec::new();
    // The file may have grown since it was measured.
    let limit = allowance.opts.max_file_bytes;
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(RenderError::TooLarge {
            file: shown.to_owned(),
            bytes: read,
            limit,
        });
    }
    String::from_utf8(bytes)
        .map_err(|error| not_utf8(shown, error.as_bytes(), error.utf8_error().valid_up_to()))
}

/// The error for a file whose bytes stop being UTF-8 at `valid`, with the line where they do.
fn not_utf8(shown: &str, bytes: &[u8], valid: usize) -> RenderError {
    let before = bytes.get(..valid).unwrap_or_default();
    let line = 1 + before.iter().filter(|byte| **byte == b'\n').count();
    RenderError::Yaml {
        file: shown.to_owned(),
        line,
        column: 0,
        message: "not UTF-8".to_owned(),
    }
}

/// One YAML document. `items` is kept apart, with the line of each entry, so that the members
/// of a `kind: List` can be traced to their own lines.
enum Document {
    Mapping {
        fields: Map<String, Value>,
        items: Option<Vec<Spanned<Value>>>,
    },
    NotAMapping,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut fields = Map::new();
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                match map.next_value::<ItemsField>()? {
                    ItemsField::Sequence(entries) => items = Some(entries),
                    ItemsField::Other(value) => {
                        fields.insert(key, value);
                    }
                }
            } else {
                let value = map.next_value::<Value>()?;
                fields.insert(key, value);
            }
        }
        Ok(Document::Mapping { fields, items })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::NotAMapping)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::NotAMapping)
    }
}

/// The value of a top-level `items` key: entries with their lines when it is a sequence.
enum ItemsField {
    Sequence(Vec<Spanned<Value>>),
    Other(Value),
}

impl<'de> Deserialize<'de> for ItemsField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = ItemsField;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemsField, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Spanned<Value>>()? {
            entries.push(entry);
        }
        Ok(ItemsField::Sequence(entries))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ItemsField, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(ItemsField::Other)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::from(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::from(value)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ItemsField, E> {
        Ok(ItemsField::Other(Value::Null))
    }
}

/// Parses a multi-document YAML (or JSON) text into objects with their lines, expanding lists.
/// Every object is checked for `apiVersion`, `kind` and `metadata.name`.
fn parse_manifests(
    text: &str,
    file: &str,
    allowance: &mut Allowance,
) -> Result<Vec<(Value, usize)>, RenderError> {
    let documents: Vec<Spanned<Document>> =
        serde_saphyr::from_multiple_with_options(text, allowance.yaml_options())
            .map_err(|error| allowance.yaml_error(file, &error))?;
    let mut objects = Vec::new();
    for document in documents {
        let line = to_usize(document.referenced.line());
        let Document::Mapping { mut fields, items } = document.value else {
            return Err(RenderError::NotAnObject {
                file: file.to_owned(),
                line,
            });
        };
        let is_list = items.is_some()
            && fields
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"));
        match items {
            Some(entries) if is_list => {
                for entry in entries {
                    let entry_line = to_usize(entry.referenced.line());
                    allowance.charge_nodes(file, count_nodes(&entry.value))?;
                    objects.push(checked_object(entry.value, file, entry_line)?);
                    allowance.charge_object()?;
                }
            }
            entries => {
                if let Some(entries) = entries {
                    let values = entries.into_iter().map(|entry| entry.value).collect();
                    fields.insert("items".to_owned(), Value::Array(values));
                }
                let object = Value::Object(fields);
                allowance.charge_nodes(file, count_nodes(&object))?;
                objects.push(checked_object(object, file, line)?);
                allowance.charge_object()?;
            }
        }
    }
    Ok(objects)
}

/// Keys and values in `value`, counted without recursion.
fn count_nodes(value: &Value) -> usize {
    let mut count = 0usize;
    let mut pending = vec![value];
    while let Some(next) = pending.pop() {
        count += 1;
        match next {
            Value::Array(entries) => pending.extend(entries),
            Value::Object(fields) => {
                count += fields.len();
                pending.extend(fields.values());
            }
            _ => {}
        }
    }
    count
}

/// `value` when it is an object with the fields server-side apply needs.
fn checked_object(value: Value, file: &str, line: usize) -> Result<(Value, usize), RenderError> {
    let file = || file.to_owned();
    let Value::Object(fields) = &value else {
        return Err(RenderError::NotAnObject { file: file(), line });
    };
    let present = |field: Option<&Value>| {
        field
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty())
    };
    if !present(fields.get("kind")) {
        return Err(RenderError::MissingKind { file: file(), line });
    }
    if !present(fields.get("apiVersion")) {
        return Err(RenderError::MissingApiVersion { file: file(), line });
    }
    match fields.get("metadata") {
        Some(Value::Object(metadata)) => {
            if !present(metadata.get("name")) {
                return Err(RenderError::MissingName { file: file(), line });
            }
        }
        None | Some(Value::Null) => return Err(RenderError::MissingName { file: file(), line }),
        Some(_) => {
            return Err(RenderError::InvalidMetadata {
                file: file(),
                line,
                field: "metadata",
                expected: "a mapping",
            });
        }
    }
    Ok((value, line))
}

/// API group and kind of an object.
fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group);
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (group, kind)
}

/// Built-in and weir's own cluster-scoped kinds, by (group, kind). Kinds of CRDs in the render
/// are added from their `spec.scope`; any other kind is taken to be namespaced.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("cert-manager.io", "ClusterIssuer"),
    ("weir.io", "ClusterAnalysisTemplate"),
];

/// Order of apply: CRDs before the objects of their kinds, Namespaces before what lives in them.
fn apply_rank(object: &Value) -> u8 {
    match group_kind(object) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        _ => 2,
    }
}

/// Defaults namespaces, adds weir's labels and annotations, refuses duplicates, and orders.
fn finish(
    mut rendered: Vec<RenderedObject>,
    opts: &RenderOptions,
) -> Result<Vec<RenderedObject>, RenderError> {
    let mut cluster_scoped: HashSet<(String, String)> = CLUSTER_SCOPED
        .iter()
        .map(|(group, kind)| ((*group).to_owned(), (*kind).to_owned()))
        .collect();
    for entry in &rendered {
        if group_kind(&entry.object) == ("apiextensions.k8s.io", "CustomResourceDefinition") {
            let spec = entry.object.get("spec");
            let text = |pointer: &str| {
                spec.and_then(|spec| spec.pointer(pointer))
                    .and_then(Value::as_str)
            };
            if let (Some("Cluster"), Some(group), Some(kind)) =
                (text("/scope"), text("/group"), text("/names/kind"))
            {
                cluster_scoped.insert((group.to_owned(), kind.to_owned()));
            }
        }
    }

    let (gitsync_namespace, gitsync_name) = &opts.gitsync;
    let gitsync = format!("{gitsync_namespace}/{gitsync_name}");
    let mut seen: HashMap<(String, String, String, String), String> =
        HashMap::with_capacity(rendered.len());
    for entry in &mut rendered {
        let (group, kind) = group_kind(&entry.object);
        let (group, kind) = (group.to_owned(), kind.to_owned());
        let namespaced = !cluster_scoped.contains(&(group.clone(), kind.clone()));
        let source = if entry.line == 0 {
            entry.source.clone()
        } else {
            format!("{}#L{}", entry.source, entry.line)
        };
        let invalid = |field, expected| RenderError::InvalidMetadata {
            file: entry.source.clone(),
            line: entry.line,
            field,
            expected,
        };
        let metadata = entry
            .object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid("metadata", "a mapping"))?;

        let namespace = match metadata.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(namespace)) if namespace.is_empty() => None,
            Some(Value::String(namespace)) => Some(namespace.clone()),
            Some(_) => return Err(invalid("metadata.namespace", "a string")),
        };
        let namespace = match namespace {
            Some(namespace) => namespace,
            None if namespaced => {
                let namespace = opts.namespace_for_unnamespaced().to_owned();
                metadata.insert("namespace".to_owned(), Value::from(namespace.clone()));
                namespace
            }
            None => String::new(),
        };

        let labels = string_map(metadata, "labels")
            .ok_or_else(|| invalid("metadata.labels", "a mapping"))?;
        labels.insert(
            LABEL_GITSYNC_NAMESPACE.to_owned(),
            Value::from(gitsync_namespace.as_str()),
        );
        // A longer name would make the apply fail; the annotation always carries it.
        if gitsync_name.len() <= MAX_LABEL_VALUE_CHARS {
            labels.insert(
                LABEL_GITSYNC_NAME.to_owned(),
                Value::from(gitsync_name.as_str()),
            );
        } else {
            labels.remove(LABEL_GITSYNC_NAME);
        }
        let annotations = string_map(metadata, "annotations")
            .ok_or_else(|| invalid("metadata.annotations", "a mapping"))?;
        annotations.insert(ANNOTATION_GITSYNC.to_owned(), Value::from(gitsync.as_str()));
        annotations.insert(ANNOTATION_SOURCE.to_owned(), Value::from(source.as_str()));

        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match seen.entry((group, kind, namespace, name)) {
            Entry::Vacant(slot) => {
                slot.insert(source);
            }
            Entry::Occupied(taken) => {
                let (_, kind, namespace, name) = taken.key();
                let object = if namespace.is_empty() {
                    format!("{kind} {name}")
                } else {
                    format!("{kind} {namespace}/{name}")
                };
                return Err(RenderError::Duplicate {
                    file: entry.source.clone(),
                    line: entry.line,
                    object,
                    first: taken.get().clone(),
                });
            }
        }
    }
    rendered.sort_by_key(|entry| apply_rank(&entry.object));
    Ok(rendered)
}

/// `metadata[key]` as a mapping, created when absent or null; `None` when it is something else.
fn string_map<'a>(
    metadata: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = metadata
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// The fields of a kustomization that name files or directories kustomize will read.
/// Everything else is kustomize's to validate.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KustomizationPaths {
    resources: Option<Vec<Spanned<String>>>,
    bases: Option<Vec<Spanned<String>>>,
    components: Option<Vec<Spanned<String>>>,
    crds: Option<Vec<Spanned<String>>>,
    configurations: Option<Vec<Spanned<String>>>,
    generators: Option<Vec<Spanned<String>>>,
    transformers: Option<Vec<Spanned<String>>>,
    validators: Option<Vec<Spanned<String>>>,
    patches_strategic_merge: Option<Vec<Spanned<String>>>,
    #[serde(rename = "patchesJson6902")]
    patches_json6902: Option<Vec<PathEntry>>,
    patches: Option<Vec<PathEntry>>,
    replacements: Option<Vec<PathEntry>>,
    openapi: Option<PathEntry>,
    config_map_generator: Option<Vec<GeneratorEntry>>,
    secret_generator: Option<Vec<GeneratorEntry>>,
}

#[derive(Deserialize, Default)]
struct PathEntry {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
struct GeneratorEntry {
    files: Option<Vec<Spanned<String>>>,
    envs: Option<Vec<Spanned<String>>>,
    env: Option<Spanned<String>>,
}

/// What kustomize does with a referenced path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReferenceKind {
    /// A manifest file or a directory holding another kustomization.
    Resource,
    /// A YAML file: a patch, a CRD schema, a transformer configuration.
    Yaml,
    /// Generator input, read as data.
    Data,
}

impl KustomizationPaths {
    fn references(self) -> Vec<(ReferenceKind, Spanned<String>)> {
        let mut references = Vec::new();
        let mut add = |kind, entries: Option<Vec<Spanned<String>>>| {
            references.extend(entries.into_iter().flatten().map(|entry| (kind, entry)));
        };
        add(ReferenceKind::Resource, self.resources);
        add(ReferenceKind::Resource, self.bases);
        add(ReferenceKind::Resource, self.components);
        add(ReferenceKind::Resource, self.generators);
        add(ReferenceKind::Resource, self.transformers);
        add(ReferenceKind::Resource, self.validators);
        add(ReferenceKind::Yaml, self.crds);
        add(ReferenceKind::Yaml, self.configurations);
        add(ReferenceKind::Yaml, self.patches_strategic_merge);
        let paths = self
            .patches_json6902
            .into_iter()
            .flatten()
            .chain(self.patches.into_iter().flatten())
            .chain(self.replacements.into_iter().flatten())
            .chain(self.openapi)
            .filter_map(|entry| entry.path)
            .collect();
        add(ReferenceKind::Yaml, Some(paths));
        for generator in self
            .config_map_generator
            .into_iter()
            .flatten()
            .chain(self.secret_generator.into_iter().flatten())
        {
            let files = generator.files.into_iter().flatten().map(|mut file| {
                // `key=path` names the data key.
                if let Some((_key, path)) = file.value.split_once('=') {
                    file.value = path.to_owned();
                }
                file
            });
            let envs = generator.envs.into_iter().flatten().chain(generator.env);
            add(ReferenceKind::Data, Some(files.chain(envs).collect()));
        }
        // Transformer, generator and patch entries may hold inline YAML instead of a path.
        references.retain(|(_, entry)| !is_inline_yaml(&entry.value));
        references
    }
}

fn is_inline_yaml(entry: &str) -> bool {
    entry.contains('\n') || entry.trim_start().starts_with('{') || entry.contains(": ")
}

/// The top-level keys of a kustomization with their lines, to point at an unknown field kustomize
/// complains about.
struct TopLevelKeys(Vec<(String, usize)>);

impl<'de> Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = TopLevelKeys;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push((key.value, to_usize(key.referenced.line())));
                }
                Ok(TopLevelKeys(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

/// A kustomization read while checking what kustomize will read.
struct KustomizationFile {
    shown: String,
    keys: Vec<(String, usize)>,
}

/// Reads every kustomization reachable from `dir`, refusing references that are remote, leave
/// the checkout or are missing, and size-checking and parsing (for syntax and limits only) every
/// file kustomize will read, so that errors name the file and line and kustomize never reads
/// outside the checkout or anything oversized.
fn check_kustomizations(
    checkout: &Checkout,
    dir: &Path,
    allowance: &mut Allowance,
) -> Result<Vec<KustomizationFile>, RenderError> {
    let mut kustomizations = Vec::new();
    let mut pending = VecDeque::from([dir.to_owned()]);
    let mut visited_dirs = HashSet::from([dir.to_owned()]);
    let mut checked_files = HashSet::new();
    while let Some(dir) = pending.pop_front() {
        allowance.check_time()?;
        let Some(file) = kustomization_in(&dir) else {
            continue;
        };
        let shown = checkout.relative(&file);
        let real = match fs::symlink_metadata(&file) {
            Ok(metadata) if metadata.file_type().is_symlink() => checkout
                .follow_symlink(&file)?
                .ok_or_else(|| RenderError::Io {
                    path: shown.clone(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })?,
            _ => file,
        };
        let text = read_checked(&real, &shown, allowance)?;
        let options = allowance.yaml_options();
        let paths: Option<KustomizationPaths> = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|error| allowance.yaml_error(&shown, &error))?;
        let keys: Option<TopLevelKeys> =
            serde_saphyr::from_str_with_options(&text, allowance.yaml_options())
                .map_err(|error| allowance.yaml_error(&shown, &error))?;
        for (kind, reference) in paths.unwrap_or_default().references() {
            let refused = |problem| RenderError::KustomizationReference {
                file: shown.clone(),
                line: to_usize(reference.referenced.line()),
                reference: reference.value.clone(),
                problem,
            };
            let target = checkout
                .resolve_reference(&dir, &reference.value)
                .map_err(refused)?;
            if target.is_dir() {
                if kind == ReferenceKind::Resource && visited_dirs.insert(target.clone()) {
                    pending.push_back(target);
                }
            } else if checked_files.insert(target.clone()) {
                let shown_target = checkout.relative(&target);
                if kind == ReferenceKind::Data {
                    let metadata = fs::metadata(&target).map_err(checkout.io_error(&target))?;
                    allowance.charge_file(&shown_target, metadata.len())?;
                } else {
                    let text = read_checked(&target, &shown_target, allowance)?;
                    let options = allowance.yaml_options();
                    serde_saphyr::from_multiple_with_options::<IgnoredAny>(&text, options)
                        .map_err(|error| allowance.yaml_error(&shown_target, &error))?;
                }
            }
        }
        kustomizations.push(KustomizationFile {
            shown,
            keys: keys.map(|keys| keys.0).unwrap_or_default(),
        });
    }
    Ok(kustomizations)
}

async fn render_kustomization(
    checkout: Checkout,
    dir: PathBuf,
    kustomization: PathBuf,
    mut allowance: Allowance,
) -> Result<Vec<RenderedObject>, RenderError> {
    let shown = checkout.relative(&kustomization);
    let (kustomizations, mut allowance) = {
        let checkout = checkout.clone();
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            check_kustomizations(&checkout, &dir, &mut allowance).map(|files| (files, allowance))
        })
        .await
        .map_err(RenderError::Task)??
    };

    let output = run_kustomize(&checkout, &dir, &allowance.opts)
        .await
        .map_err(|failure| match failure {
            KustomizeFailure::Spawn(source) => RenderError::KustomizeSpawn {
                program: allowance.opts.kustomize.program().display().to_string(),
                source,
            },
            KustomizeFailure::Output(bytes) => RenderError::TotalTooLarge {
                file: shown.clone(),
                bytes,
                limit: allowance.opts.max_total_bytes,
            },
            KustomizeFailure::Failed(message) => {
                let (file, line) = locate_unknown_field(&message, &kustomizations)
                    .unwrap_or_else(|| (shown.clone(), 0));
                RenderError::Kustomize {
                    file,
                    line,
                    message,
                }
            }
        })?;

    tokio::task::spawn_blocking(move || {
        let text = String::from_utf8(output).map_err(|_| RenderError::Kustomize {
            file: shown.clone(),
            line: 0,
            message: "output is not UTF-8".to_owned(),
        })?;
        let objects = parse_manifests(&text, &shown, &mut allowance).map_err(|error| {
            // Lines of kustomize's output mean nothing to the user.
            match error {
                RenderError::Yaml { file, message, .. } => RenderError::Kustomize {
                    file,
                    line: 0,
                    message: format!("unreadable output: {message}"),
                },
                RenderError::TooDeep { file, limit, .. } => RenderError::TooDeep {
                    file,
                    line: 0,
                    limit,
                },
                other => other,
            }
        })?;
        Ok(objects
            .into_iter()
            .map(|(object, _line)| RenderedObject {
                object,
                source: shown.clone(),
                line: 0,
            })
            .collect())
    })
    .await
    .map_err(RenderError::Task)?
}

/// For kustomize's `unknown field "x"`, the first kustomization (in reading order) with a
/// top-level key `x`, and its line.
fn locate_unknown_field(
    message: &str,
    kustomizations: &[KustomizationFile],
) -> Option<(String, usize)> {
    let (_, rest) = message.split_once("unknown field \"")?;
    let (field, _) = rest.split_once('"')?;
    kustomizations.iter().find_map(|kustomization| {
        kustomization
            .keys
            .iter()
            .find(|(key, _)| key == field)
            .map(|(_, line)| (kustomization.shown.clone(), *line))
    })
}

enum KustomizeFailure {
    Spawn(io::Error),
    /// Output larger than the limit; the bytes read when it was stopped.
    Output(u64),
    Failed(String),
}

/// Runs kustomize on `dir` with the checkout as working directory, no shell, plugins and Helm
/// left disabled, and files restricted to the kustomization's root. The child is killed when the
/// render is dropped (timeout) or its output grows past the limit.
async fn run_kustomize(
    checkout: &Checkout,
    dir: &Path,
    opts: &RenderOptions,
) -> Result<Vec<u8>, KustomizeFailure> {
    let mut child = tokio::process::Command::new(opts.kustomize.program())
        .arg(opts.kustomize.subcommand())
        .arg("--load-restrictor=LoadRestrictionsRootOnly")
        .arg(dir)
        .current_dir(&checkout.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(KustomizeFailure::Spawn)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(KustomizeFailure::Spawn(io::Error::other(
            "kustomize's output was not captured",
        )));
    };
    let limit = opts.max_total_bytes;
    let read_stdout = async {
        let mut output = Vec::new();
        let read = stdout
            .take(limit.saturating_add(1))
            .read_to_end(&mut output)
            .await;
        let size = u64::try_from(output.len()).unwrap_or(u64::MAX);
        if size > limit {
            // Closing stderr this way also ends the stderr reader.
            let _ = child.start_kill();
        }
        read.map(|_| output)
    };
    let (output, stderr) = tokio::join!(read_stdout, read_capped(stderr, MAX_STDERR_BYTES));
    let output = output.map_err(KustomizeFailure::Spawn)?;
    let size = u64::try_from(output.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(KustomizeFailure::Output(size));
    }
    let status = child.wait().await.map_err(KustomizeFailure::Spawn)?;
    if status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&stderr);
        let mut message = kustomize_message(&stderr, &checkout.root);
        if message.is_empty() {
            message = format!("exited with {status}");
        }
        Err(KustomizeFailure::Failed(message))
    }
}

/// Reads `reader` to its end, keeping the first `cap` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(read) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend(buffer.iter().take(read.min(room)));
            }
        }
    }
}

/// kustomize's message without kubectl's log framing, on one line, with the checkout's absolute
/// path removed (it means nothing to the user and reveals the controller's layout).
fn kustomize_message(stderr: &str, root: &Path) -> String {
    let mut parts = Vec::new();
    for line in stderr.lines() {
        let line = line.trim();
        // kubectl logs `E1122 … run.go:72] "command failed" err="…"` or `err=<` … `>`.
        let text = match line.split_once("\"command failed\" err=") {
            Some((_, text)) => text,
            None => line,
        };
        let text = text
            .strip_prefix('"')
            .and_then(|text| text.strip_suffix('"'))
            .unwrap_or(text);
        let text = text.strip_prefix("Error: ").unwrap_or(text);
        if matches!(text, "" | "<" | ">") {
            continue;
        }
        parts.push(text.replace("\\\"", "\"").replace("\\n", " "));
    }
    let root = root.display().to_string();
    let message = parts
        .join(" ")
        .replace(&format!("{root}/"), "")
        .replace(&root, ".");
    if message.chars().count() > MAX_MESSAGE_CHARS {
        let mut short: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        short.push('…');
        short
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "weir-render-unit-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            for (path, text) in files {
                let path = dir.join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn allowance() -> Allowance {
        Allowance::new(
            RenderOptions::new("team", "apps"),
            Instant::now().checked_add(Duration::from_secs(60)),
        )
    }

    fn parse(text: &str) -> Result<Vec<(Value, usize)>, RenderError> {
        parse_manifests(text, "app.yaml", &mut allowance())
    }

    /// Files enough for the parallel parse, each holding one ConfigMap; `broken` holds bad YAML.
    fn many_files(count: usize, broken: &[usize]) -> Vec<(String, String)> {
        (0..count)
            .map(|i| {
                let text = if broken.contains(&i) {
                    "a: [unclosed\n".to_owned()
                } else {
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:03}}}\n")
                };
                (format!("apps/cm-{i:03}.yaml"), text)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_parallel_parse_keeps_file_order_the_first_error_and_the_render_wide_limits() {
        let count = PARALLEL_MIN_FILES * 2;
        let files = many_files(count, &[]);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let tree = Tree::new(&refs);
        let opts = RenderOptions::new("team", "apps");
        let rendered = render(&tree.0, "apps", &opts).await.unwrap();
        let sources: Vec<&str> = rendered.iter().map(|r| r.source.as_str()).collect();
        let expected: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(sources, expected);

        // Each thread alone stays under the object limit; the render as a whole does not.
        let limited = RenderOptions {
            max_objects: count - 1,
            ..opts.clone()
        };
        let error = render(&tree.0, "apps", &limited).await.unwrap_err();
        assert!(matches!(error, RenderError::TooMany { .. }), "{error}");

        // Two broken files, one per thread: the first in file order is reported.
        let files = many_files(count, &[count / 2 + 3, 5]);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let tree = Tree::new(&refs);
        let error = render(&tree.0, "apps", &opts).await.unwrap_err();
        assert_eq!(
            error.file_line().map(|(file, _)| file),
            Some("apps/cm-005.yaml".to_owned())
        );
    }

    #[test]
    fn documents_keep_their_start_lines_and_lists_expand() {
        let cases: &[(&str, &[usize])] = &[
            ("apiVersion: v1\nkind: A\nmetadata: {name: a}\n", &[1]),
            (
                "# header\n---\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n---\n\n---\n# c\napiVersion: v1\nkind: B\nmetadata: {name: b}\n",
                &[3, 11],
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: A\n  metadata: {name: a}\n- apiVersion: v1\n  kind: B\n  metadata: {name: b}\n",
                &[4, 7],
            ),
            ("apiVersion: v1\nkind: List\nitems: []\n", &[]),
            ("", &[]),
            ("# only a comment\n", &[]),
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"A\", \"metadata\": {\"name\": \"a\"}}\n",
                &[1],
            ),
        ];
        for (text, lines) in cases {
            let parsed = parse(text).unwrap();
            let got: Vec<usize> = parsed.iter().map(|(_, line)| *line).collect();
            assert_eq!(&got, lines, "{text}");
        }
    }

    #[test]
    fn a_non_list_kind_keeps_its_items_field() {
        let parsed = parse(
            "apiVersion: example.com/v1\nkind: Menu\nmetadata: {name: m}\nitems: [1, {a: b}]\n",
        )
        .unwrap();
        assert_eq!(parsed[0].0["items"], serde_json::json!([1, {"a": "b"}]));
    }

    #[test]
    fn yaml_follows_kubernetes_dialect() {
        let parsed = parse(
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\nmode: 0644\nport: 80\nquoted: '0644'\n",
        )
        .unwrap();
        let object = &parsed[0].0;
        assert_eq!(object["mode"], 420);
        assert_eq!(object["port"], 80);
        assert_eq!(object["quoted"], "0644");
    }

    #[test]
    fn bad_documents_name_file_and_line() {
        let cases: &[(&str, &str)] = &[
            ("apiVersion: v1\nkind: A\n  bad: indent\n", "app.yaml:3:"),
            ("a: 1\nb: [1, 2\nc: 3\n", "app.yaml:3:"),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n- 1\n",
                "app.yaml:5: document is not",
            ),
            (
                "apiVersion: v1\nmetadata: {name: a}\n",
                "app.yaml:1: object has no kind",
            ),
            (
                "kind: A\nmetadata: {name: a}\n",
                "app.yaml:1: object has no apiVersion",
            ),
            (
                "apiVersion: v1\nkind: A\n",
                "app.yaml:1: object has no metadata.name",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: x\n",
                "app.yaml:1: metadata must be a mapping",
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n- 3\n",
                "app.yaml:4: document is not",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a}\nx: 1\nx: 2\n",
                "app.yaml:5:",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a}\nx: *nope\n",
                "app.yaml:4:",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn hostile_yaml_is_refused_without_exhausting_the_controller() {
        let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        let mut previous = 'a';
        for name in 'b'..='j' {
            let refs = vec![format!("*{previous}"); 9].join(", ");
            laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
            previous = name;
        }
        let block_nesting: String = (0..200)
            .map(|depth| format!("{}k:\n", " ".repeat(depth)))
            .collect();
        let cases = [
            ("[".repeat(10_000), "nested deeper than 64"),
            ("{a: ".repeat(10_000), "nested deeper than 64"),
            (block_nesting, "app.yaml:65: nested deeper than 64"),
            (laughs, "app.yaml:"),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_node_allowance_spans_files() {
        let mut allowance = allowance();
        allowance.opts.max_nodes = 25;
        let text = "apiVersion: v1\nkind: A\nmetadata: {name: a}\ndata: [1, 2, 3, 4, 5, 6]\n";
        parse_manifests(text, "one.yaml", &mut allowance).unwrap();
        let error = parse_manifests(text, "two.yaml", &mut allowance).unwrap_err();
        assert!(
            matches!(error, RenderError::TooComplex { ref file, .. } if file == "two.yaml"),
            "{error}"
        );
    }

    #[test]
    fn the_object_limit_stops_the_render() {
        let mut allowance = allowance();
        allowance.opts.max_objects = 2;
        let text = "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: A\nmetadata: {name: b}\n---\napiVersion: v1\nkind: A\nmetadata: {name: c}\n";
        let error = parse_manifests(text, "app.yaml", &mut allowance).unwrap_err();
        assert!(
            matches!(error, RenderError::TooMany { count: 3, limit: 2 }),
            "{error}"
        );
    }

    fn object(
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> RenderedObject {
        let mut metadata = serde_json::json!({"name": name});
        if let Some(namespace) = namespace {
            metadata["namespace"] = Value::from(namespace);
        }
        RenderedObject {
            object: serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}),
            source: "app.yaml".to_owned(),
            line: 1,
        }
    }

    #[test]
    fn namespaces_are_defaulted_on_namespaced_kinds_only() {
        let crd = RenderedObject {
            object: serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}},
            }),
            source: "crd.yaml".to_owned(),
            line: 1,
        };
        let cases = [
            (object("v1", "ConfigMap", "c", None), None, Some("team")),
            (
                object("v1", "ConfigMap", "c", None),
                Some("prod"),
                Some("prod"),
            ),
            (
                object("v1", "ConfigMap", "c", Some("other")),
                Some("prod"),
                Some("other"),
            ),
            (object("v1", "Namespace", "n", None), Some("prod"), None),
            (
                object("rbac.authorization.k8s.io/v1", "ClusterRole", "r", None),
                Some("prod"),
                None,
            ),
            (
                object("rbac.authorization.k8s.io/v1", "Role", "r", None),
                Some("prod"),
                Some("prod"),
            ),
            (
                object("weir.io/v1alpha1", "ClusterAnalysisTemplate", "t", None),
                Some("prod"),
                None,
            ),
            (
                object("example.com/v1", "Widget", "w", None),
                Some("prod"),
                None,
            ),
            (
                object("other.example.com/v1", "Widget", "w", None),
                Some("prod"),
                Some("prod"),
            ),
        ];
        for (input, target, expected) in cases {
            let mut opts = RenderOptions::new("team", "apps");
            opts.target_namespace = target.map(str::to_owned);
            let out = finish(vec![crd.clone(), input.clone()], &opts).unwrap();
            let namespace = out[1].object["metadata"]
                .get("namespace")
                .and_then(Value::as_str);
            assert_eq!(namespace, expected, "{input:?} {target:?}");
        }
    }

    #[test]
    fn objects_carry_their_gitsync_and_source() {
        let mut input = object("v1", "ConfigMap", "c", None);
        input.object["metadata"]["labels"] = serde_json::json!({"app": "web"});
        input.line = 7;
        let out = finish(vec![input], &RenderOptions::new("team", "apps")).unwrap();
        let metadata = &out[0].object["metadata"];
        assert_eq!(metadata["labels"]["app"], "web");
        assert_eq!(metadata["labels"][LABEL_GITSYNC_NAME], "apps");
        assert_eq!(metadata["labels"][LABEL_GITSYNC_NAMESPACE], "team");
        assert_eq!(metadata["annotations"][ANNOTATION_GITSYNC], "team/apps");
        assert_eq!(metadata["annotations"][ANNOTATION_SOURCE], "app.yaml#L7");

        let long_name = "n".repeat(64);
        let out = finish(
            vec![object("v1", "ConfigMap", "c", None)],
            &RenderOptions::new("team", &long_name),
        )
        .unwrap();
        let metadata = &out[0].object["metadata"];
        assert!(metadata["labels"].get(LABEL_GITSYNC_NAME).is_none());
        assert_eq!(
            metadata["annotations"][ANNOTATION_GITSYNC],
            format!("team/{long_name}")
        );

        let mut bad = object("v1", "ConfigMap", "c", None);
        bad.object["metadata"]["labels"] = Value::from("x");
        let error = finish(vec![bad], &RenderOptions::new("team", "apps")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "app.yaml:1: metadata.labels must be a mapping"
        );
    }

    #[test]
    fn crds_then_namespaces_then_the_rest_in_file_order() {
        let input = vec![
            object("apps/v1", "Deployment", "d", None),
            object("v1", "Namespace", "n1", None),
            object("v1", "ConfigMap", "c", None),
            object(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "x.example.com",
                None,
            ),
            object("v1", "Namespace", "n2", None),
            object("v1", "Service", "s", None),
        ];
        let out = finish(input, &RenderOptions::new("team", "apps")).unwrap();
        let names: Vec<&str> = out
            .iter()
            .map(|entry| entry.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["x.example.com", "n1", "n2", "d", "c", "s"]);
    }

    #[test]
    fn duplicates_are_refused_with_both_places() {
        let first = object("apps/v1", "Deployment", "web", None);
        let mut second = object("apps/v1", "Deployment", "web", Some("team"));
        second.source = "b.yaml".to_owned();
        second.line = 4;
        let error = finish(
            vec![first.clone(), second],
            &RenderOptions::new("team", "apps"),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "b.yaml:4: Deployment team/web is also defined at app.yaml#L1"
        );
        assert_eq!(error.file_line(), Some(("b.yaml".to_owned(), 4)));
        // Same name, other group or namespace: distinct objects.
        let other_group = object("example.com/v1", "Deployment", "web", None);
        let other_namespace = object("apps/v1", "Deployment", "web", Some("prod"));
        finish(
            vec![first, other_group, other_namespace],
            &RenderOptions::new("team", "apps"),
        )
        .unwrap();
    }

    #[test]
    fn path_field_must_stay_inside_the_checkout() {
        let tree = Tree::new(&[("apps/a.yaml", ""), ("apps/sub/b.yaml", "")]);
        let checkout = Checkout::open(&tree.0).unwrap();
        let cases = [
            ("", true),
            (".", true),
            ("./apps", true),
            ("apps/", true),
            ("apps/sub", true),
            ("../x", false),
            ("apps/../apps", false),
            ("/etc", false),
            ("/", false),
        ];
        for (path, allowed) in cases {
            let result = checkout.resolve_path_field(path);
            assert_eq!(result.is_ok(), allowed, "{path:?}: {result:?}");
            if !allowed {
                assert!(
                    matches!(result, Err(RenderError::PathEscapes { .. })),
                    "{path:?}"
                );
            }
        }
    }

    #[test]
    fn kustomization_references_are_checked() {
        let tree = Tree::new(&[("base/a.yaml", ""), ("app/kustomization.yaml", "")]);
        let checkout = Checkout::open(&tree.0).unwrap();
        let app = checkout.root.join("app");
        let cases = [
            ("../base", Ok(())),
            ("../base/a.yaml", Ok(())),
            ("../../outside", Err(ReferenceProblem::OutsideRoot)),
            ("/etc/passwd", Err(ReferenceProblem::OutsideRoot)),
            ("missing.yaml", Err(ReferenceProblem::Missing)),
            (
                "https://example.com/app.yaml",
                Err(ReferenceProblem::Remote),
            ),
            (
                "github.com/org/repo//deploy?ref=v1",
                Err(ReferenceProblem::Remote),
            ),
            ("git@github.com:org/repo.git", Err(ReferenceProblem::Remote)),
        ];
        for (reference, expected) in cases {
            let got = checkout.resolve_reference(&app, reference).map(|_| ());
            assert_eq!(got, expected, "{reference}");
        }
    }

    #[test]
    fn kustomization_paths_cover_every_file_kustomize_reads() {
        let text = r#"
resources: [a.yaml, ../base]
bases: [../old]
components: [../component]
crds: [crd.json]
configurations: [config.yaml]
generators: [gen.yaml]
transformers: ["apiVersion: builtin\nkind: LabelTransformer\n", trans.yaml]
validators: [val.yaml]
patchesStrategicMerge: [smp.yaml, "{apiVersion: v1, kind: X}"]
patchesJson6902: [{path: json.yaml, target: {kind: X}}]
patches: [{path: patch.yaml}, {patch: "inline"}]
replacements: [{path: repl.yaml}]
openapi: {path: schema.json}
configMapGenerator: [{name: c, files: [key=data.txt, plain.txt], envs: [a.env], env: b.env}]
secretGenerator: [{name: s, files: [secret.txt]}]
namePrefix: x-
"#;
        let paths: KustomizationPaths = serde_saphyr::from_str(text).unwrap();
        let mut got: Vec<String> = paths
            .references()
            .into_iter()
            .map(|(_, entry)| entry.value)
            .collect();
        got.sort();
        let mut expected = vec![
            "a.yaml",
            "../base",
            "../old",
            "../component",
            "crd.json",
            "config.yaml",
            "gen.yaml",
            "trans.yaml",
            "val.yaml",
            "smp.yaml",
            "json.yaml",
            "patch.yaml",
            "repl.yaml",
            "schema.json",
            "data.txt",
            "plain.txt",
            "a.env",
            "b.env",
            "secret.txt",
        ];
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn kubectl_messages_lose_their_framing_and_the_checkout_path() {
        let root = Path::new("/var/lib/weir/checkouts/abc");
        let cases = [
            (
                "E1122 21:19:22.554001   28086 run.go:72] \"command failed\" err=\"invalid Kustomization: json: unknown field \\\"foo\\\"\"\n",
                "invalid Kustomization: json: unknown field \"foo\"",
            ),
            (
                "E1122 21:19:22.912268   28134 run.go:72] \"command failed\" err=<\n\ttrouble with `\n\tpath: nope.yaml\n\t`: lstat /var/lib/weir/checkouts/abc/app/nope.yaml: no such file\n >\n",
                "trouble with ` path: nope.yaml `: lstat app/nope.yaml: no such file",
            ),
            (
                "Error: accumulating resources from '/var/lib/weir/checkouts/abc'\n",
                "accumulating resources from '.'",
            ),
        ];
        for (stderr, expected) in cases {
            assert_eq!(kustomize_message(stderr, root), expected);
        }
        let long = "x".repeat(5000);
        assert_eq!(
            kustomize_message(&long, root).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn unknown_fields_are_traced_to_their_kustomization() {
        let files = [
            KustomizationFile {
                shown: "app/kustomization.yaml".into(),
                keys: vec![("resources".into(), 1)],
            },
            KustomizationFile {
                shown: "base/kustomization.yaml".into(),
                keys: vec![("resources".into(), 1), ("foo".into(), 3)],
            },
        ];
        let message = "accumulating resources: invalid Kustomization: json: unknown field \"foo\"";
        assert_eq!(
            locate_unknown_field(message, &files),
            Some(("base/kustomization.yaml".to_owned(), 3))
        );
        assert_eq!(locate_unknown_field("unknown field \"bar\"", &files), None);
        assert_eq!(locate_unknown_field("other failure", &files), None);
    }

    #[test]
    fn every_error_with_a_file_shows_it() {
        let errors = [
            RenderError::TooLarge {
                file: "big.yaml".into(),
                bytes: 2,
                limit: 1,
            },
            RenderError::Symlink {
                path: "app/x.yaml".into(),
                target: "/etc/passwd".into(),
            },
            RenderError::Kustomize {
                file: "k/kustomization.yaml".into(),
                line: 0,
                message: "m".into(),
            },
            RenderError::Kustomize {
                file: "k/kustomization.yaml".into(),
                line: 3,
                message: "m".into(),
            },
            RenderError::TooDeep {
                file: "deep.yaml".into(),
                line: 9,
                limit: 64,
            },
        ];
        for error in errors {
            let (file, line) = error.file_line().unwrap();
            let shown = error.to_string();
            assert!(shown.starts_with(&file), "{shown}");
            if line > 0 {
                assert!(shown.starts_with(&format!("{file}:{line}")), "{shown}");
            }
        }
    }
}
