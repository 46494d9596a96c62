#![forbid(unsafe_code)]
//! `kubectl-weir`: on PATH, it makes `kubectl weir …` work through kubectl's plugin mechanism.

use std::process::ExitCode;

use clap::Parser;
use weir::plugin::{Cli, EXIT_FAILED, run};

fn main() -> ExitCode {
    // kube uses ring; reqwest (for analyze) is built without a provider, so install one first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let error = anyhow::Error::new(e);
            eprintln!("error: {}", error.to_string().replace('\n', " "));
            ExitCode::from(EXIT_FAILED)
        }
    }
}
