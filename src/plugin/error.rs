//! The errors every verb reports. Each message is complete on one line, cause included, because the
//! binary prints only `error: <message>`; the causes are kept as sources for callers that want them.

use std::path::PathBuf;

/// Why a `kubectl weir` command failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No kubeconfig could be read.
    #[error("cannot read kubeconfig{}: {detail}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        /// The file, when one was named.
        path: Option<PathBuf>,
        /// What went wrong, one line.
        detail: String,
        /// The underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig names no current context and none was given.
    #[error(
        "the kubeconfig{} has no current context; pass --context NAME",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
    )]
    NoContext {
        /// The file, when one was named.
        path: Option<PathBuf>,
    },
    /// Neither a kubeconfig nor a usable in-cluster service account was found.
    #[error("no kubeconfig, and the in-cluster configuration cannot be used: {detail}")]
    InCluster {
        /// What went wrong, one line.
        detail: String,
        /// The underlying error.
        #[source]
        source: kube::config::InClusterError,
    },
    /// A client could not be built from the kubeconfig.
    #[error("cannot connect to the cluster: {detail}")]
    Client {
        /// What went wrong, one line.
        detail: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The named object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// e.g. `rollout`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The cluster does not serve weir's kinds.
    #[error(
        "the cluster does not serve {resource} (are weir's CRDs installed? kubectl apply -f crds/)"
    )]
    NotServed {
        /// e.g. `rollouts.weir.io/v1alpha1`.
        resource: &'static str,
    },
    /// A request to the API server failed.
    #[error("{action}: {detail}")]
    Api {
        /// What was being done, e.g. `patching rollout default/web`.
        action: String,
        /// The server's or the transport's message, one line.
        detail: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The command makes no sense for the object's current state.
    #[error("{0}")]
    Refused(String),
    /// The command line is wrong in a way clap cannot tell (an unknown kind, a bad `--arg`).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest could not be used (`analyze -f`).
    #[error("{}: {detail}", path.display())]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Output could not be written or encoded.
    #[error("cannot write output: {0}")]
    Output(String),
}

impl PluginError {
    /// Wraps an API error with what was being done, turning the server's Status into one line.
    pub fn api(action: impl Into<String>, source: kube::Error) -> PluginError {
        PluginError::Api {
            action: action.into(),
            detail: describe(&source),
            source,
        }
    }
}

/// One line describing a kube error: the server's message for API errors, the transport's otherwise.
pub fn describe(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => {
            // Transport errors nest their causes; the innermost is the one a person can act on.
            let mut parts = vec![other.to_string()];
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let line = s.to_string();
                if !parts.iter().any(|p| p.contains(&line)) {
                    parts.push(line);
                }
                source = s.source();
            }
            parts.join(": ")
        }
    };
    text.replace('\n', " ")
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
