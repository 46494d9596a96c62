//! `kubectl weir`: the kubectl plugin people drive rollouts with.
//!
//! One module per verb. The intent verbs (`promote`, `abort`, `retry`, `pause`, `resume`) only write
//! the fields a person's intent lives in (`spec.paused`, `status.abort`, `status.promoteFull`,
//! `status.pauseConditions`, `status.gitRevert`); the Rollout controller does the work. Every verb
//! returns the process exit code it wants, or a [`PluginError`] (exit 1).

pub mod abort;
pub mod analyze;
pub mod completion;
pub mod error;
pub mod get;
pub mod history;
pub mod intent;
pub mod kubeconfig;
pub mod lint;
pub mod list;
pub mod located_yaml;
pub mod output;
pub mod pause;
pub mod promote;
pub mod resume;
pub mod retry;
pub mod snapshot;
pub mod status;
pub mod style;
pub mod tree;
pub mod version;

use clap::{Parser, Subcommand};

pub use error::PluginError;
use kubeconfig::ClusterArgs;

/// The field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-weir";

/// Exit code of a verb that did what was asked (`status`: the Rollout is Healthy).
pub const EXIT_OK: u8 = 0;
/// Exit code of a refusal or an error (`status`: the Rollout is Degraded or aborted).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of `status` when the Rollout did not finish in time.
pub const EXIT_TIMEOUT: u8 = 2;

/// The command line of `kubectl-weir`.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-weir",
    bin_name = "kubectl weir",
    version,
    about = "Drive weir Rollouts: watch them, promote, abort, retry, pause and resume them, and check manifests and analyses offline",
    after_help = "Examples:\n  kubectl weir get rollout web --watch\n  kubectl weir promote web\n  kubectl weir status web --watch --timeout 10m\n  kubectl weir lint -f deploy/\n  kubectl weir analyze -f error-rate.yaml --arg service=web --prometheus http://localhost:9090"
)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
    /// Kubeconfig, context and namespace, as kubectl takes them.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Never colour output (colour is used only when stdout is a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// The verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a Rollout as a tree: phase, step, weights, revisions, ReplicaSets and AnalysisRuns.
    Get(get::GetArgs),
    /// List Rollouts as a table, or as JSON or YAML.
    List(list::ListArgs),
    /// Report whether a Rollout is Healthy (exit 0), Degraded or aborted (1), or neither in time (2).
    Status(status::StatusArgs),
    /// Continue a paused Rollout, or with --full skip its remaining steps.
    Promote(promote::PromoteArgs),
    /// Abort a release and send all traffic back to stable; with --revert also revert it in Git.
    Abort(abort::AbortArgs),
    /// Start an aborted release again from its first step.
    Retry(retry::RetryArgs),
    /// Pause a Rollout where it is (spec.paused=true).
    Pause(pause::PauseArgs),
    /// Resume a Rollout paused with `pause` (spec.paused=false).
    Resume(resume::ResumeArgs),
    /// Check Rollouts, AnalysisTemplates and GitSyncs offline: schema, references and CEL.
    Lint(lint::LintArgs),
    /// Run an AnalysisTemplate now against a live Prometheus, without deploying anything.
    Analyze(analyze::AnalyzeArgs),
    /// Show a Rollout's revisions: images, Git commit, and when each became stable or was aborted.
    History(history::HistoryArgs),
    /// Print the plugin's version.
    Version(version::VersionArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// Runs a parsed command line and returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, PluginError> {
    let style = style::Style::detect(cli.no_color);
    let cluster = &cli.cluster;
    match cli.command {
        Command::Get(args) => get::run(cluster, args, style).await,
        Command::List(args) => list::run(cluster, args, style).await,
        Command::Status(args) => status::run(cluster, args, style).await,
        Command::Promote(args) => promote::run(cluster, args).await,
        Command::Abort(args) => abort::run(cluster, args).await,
        Command::Retry(args) => retry::run(cluster, args).await,
        Command::Pause(args) => pause::run(cluster, args).await,
        Command::Resume(args) => resume::run(cluster, args).await,
        Command::Lint(args) => lint::run(args),
        Command::Analyze(args) => analyze::run(args, style).await,
        Command::History(args) => history::run(cluster, args).await,
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args),
    }
}
