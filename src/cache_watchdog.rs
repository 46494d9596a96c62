//! Starts a controller again when its watch cache never fills.
//!
//! kube-runtime holds a controller's reconciles until its watch cache has had its first list. The
//! chaos test (tests/chaos.rs) caught a controller whose first list failed with a 500 never fill
//! its cache and so never reconcile again, with nothing in the log: every Rollout stood still
//! until weir was restarted. A controller whose cache has not filled within
//! [`FIRST_LIST_DEADLINE`] is therefore dropped (which ends its watches) and built again.

use std::future::Future;
use std::time::Duration;

/// How long a controller's caches may take to fill before the controller is started again. A
/// first list of ten thousand objects takes a few seconds; this leaves room for a slow API server.
pub const FIRST_LIST_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `controller` until it ends (`true`), or until `filled` has not finished within
/// [`FIRST_LIST_DEADLINE`] (`false`: the caller builds the controller again). Once the caches
/// have filled, the controller runs for as long as it runs.
pub async fn run_or_restart(
    name: &str,
    filled: impl Future<Output = ()>,
    controller: impl Future<Output = ()>,
) -> bool {
    let mut controller = std::pin::pin!(controller);
    tokio::select! {
        () = &mut controller => return true,
        waited = tokio::time::timeout(FIRST_LIST_DEADLINE, filled) => {
            if waited.is_err() {
                tracing::warn!(
                    controller = name,
                    deadline = ?FIRST_LIST_DEADLINE,
                    "the watch cache did not fill in time; starting the controller again"
                );
                return false;
            }
        }
    }
    controller.await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cache_that_never_fills_asks_for_a_restart() {
        let restart = !run_or_restart("test", std::future::pending(), std::future::pending()).await;
        assert!(restart);
    }

    #[tokio::test(start_paused = true)]
    async fn a_filled_cache_lets_the_controller_run_to_its_end() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let filled = async {};
        let controller = async move {
            // Runs past the deadline, which must not stop it once the cache has filled.
            tokio::time::sleep(FIRST_LIST_DEADLINE * 3).await;
            let _ = tx.send(());
        };
        assert!(run_or_restart("test", filled, controller).await);
        assert!(rx.await.is_ok());
    }
}
