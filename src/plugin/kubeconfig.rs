//! Connecting as kubectl does: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`; the
//! context from `--context` or the kubeconfig's current context; the namespace from `-n`, else the
//! context's namespace, else `default`. kubectl passes these flags through to a plugin untouched,
//! so the plugin resolves them itself.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::{PluginError, describe};

/// The flags every verb that talks to a cluster accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Connection {
    /// The API client.
    pub client: Client,
    /// The namespace from `-n`, the context, or `default`.
    pub namespace: String,
}

impl ClusterArgs {
    /// Reads the kubeconfig and builds a client, failing with one clear line when the kubeconfig is
    /// missing, unreadable, or names no context.
    pub async fn connect(&self) -> Result<Connection, PluginError> {
        let kubeconfig = match &self.kubeconfig {
            Some(path) => {
                Kubeconfig::read_from(path).map_err(|source| PluginError::Kubeconfig {
                    path: Some(path.clone()),
                    detail: kubeconfig_detail(&source),
                    source,
                })?
            }
            None => match Kubeconfig::read() {
                Ok(kubeconfig) => kubeconfig,
                // A CI job running in a pod has no kubeconfig but a service account, which kubectl
                // uses too.
                Err(_) if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                    return self.in_cluster();
                }
                Err(source) => {
                    return Err(PluginError::Kubeconfig {
                        path: None,
                        detail: kubeconfig_detail(&source),
                        source,
                    });
                }
            },
        };
        let has_context = self.context.is_some()
            || kubeconfig
                .current_context
                .as_deref()
                .is_some_and(|c| !c.is_empty());
        if !has_context {
            return Err(PluginError::NoContext {
                path: self.kubeconfig.clone(),
            });
        }
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| PluginError::Kubeconfig {
                path: self.kubeconfig.clone(),
                detail: kubeconfig_detail(&source),
                source,
            })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|source| PluginError::Client {
            detail: describe(&source),
            source,
        })?;
        Ok(Connection { client, namespace })
    }
}

impl ClusterArgs {
    fn in_cluster(&self) -> Result<Connection, PluginError> {
        let config = Config::incluster().map_err(|source| PluginError::InCluster {
            detail: source.to_string().replace('\n', " "),
            source,
        })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|source| PluginError::Client {
            detail: describe(&source),
            source,
        })?;
        Ok(Connection { client, namespace })
    }
}

fn kubeconfig_detail(error: &kube::config::KubeconfigError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}
