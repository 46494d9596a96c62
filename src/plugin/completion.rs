//! `kubectl weir completion bash|zsh|fish`.

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, PluginError};

/// Flags of `completion`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  source <(kubectl weir completion bash)\n  kubectl weir completion zsh > \"${fpath[1]}/_kubectl-weir\"\n  kubectl weir completion fish > ~/.config/fish/completions/kubectl-weir.fish"
)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Writes the completion script for `shell` into `out`, for the `kubectl-weir` binary.
pub fn script(shell: &str, out: &mut dyn std::io::Write) -> Result<(), PluginError> {
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => return Err(PluginError::Usage(format!("unsupported shell {other:?}"))),
    };
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "kubectl-weir", out);
    Ok(())
}

/// Prints the completion script.
pub fn run(args: CompletionArgs) -> Result<u8, PluginError> {
    let mut buf = Vec::new();
    script(&args.shell, &mut buf)?;
    super::output::print(&String::from_utf8_lossy(&buf))?;
    Ok(super::EXIT_OK)
}
