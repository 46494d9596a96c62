//! Writing to stdout without panicking: a closed pipe (`kubectl weir list | head -1`) ends output
//! quietly instead of aborting the process.

use std::io::Write;

use super::error::PluginError;

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> Result<(), PluginError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(PluginError::Output(e.to_string())),
    }
}
