//! `kubectl weir version`.

use super::PluginError;
use super::output::print;

/// Flags of `version`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  kubectl weir version\n  kubectl weir version --short")]
pub struct VersionArgs {
    /// Print only the version number.
    #[arg(long)]
    pub short: bool,
}

/// The version line: the crate version and the API version the plugin speaks.
pub fn text(short: bool) -> String {
    let version = env!("CARGO_PKG_VERSION");
    if short {
        format!("{version}\n")
    } else {
        format!("kubectl-weir {version} (API {})\n", crate::api::API_VERSION)
    }
}

/// Prints the version.
pub fn run(args: VersionArgs) -> Result<u8, PluginError> {
    print(&text(args.short))?;
    Ok(super::EXIT_OK)
}
