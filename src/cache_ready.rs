//! Readiness of a reflector cache that any number of reconciles can wait on at once.
//!
//! kube-runtime's `Store::wait_until_ready` sits on a oneshot receiver, which keeps a single waker:
//! when several reconciles wait on it together, only the one polled last is woken when the first
//! list arrives, and the others wait forever. A controller never reconciles an object again while
//! its reconcile is still running, so each of those objects froze for good. The chaos test found it:
//! after a restart whose first list failed, most Rollouts stood still. A `watch` channel wakes every
//! waiter.
use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// Marks a cache ready when its watch delivers the end of the first list.
#[derive(Debug)]
pub struct CacheReadySignal(watch::Sender<bool>);

/// Waits until the cache behind a [`CacheReadySignal`] holds its first full list.
#[derive(Clone, Debug)]
pub struct CacheReady(watch::Receiver<bool>);

/// A linked signal and waiter, not ready yet.
pub fn cache_ready() -> (CacheReadySignal, CacheReady) {
    let (tx, rx) = watch::channel(false);
    (CacheReadySignal(tx), CacheReady(rx))
}

impl CacheReady {
    /// Waits for the first full list. False when the watch is gone before it ever listed.
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|ready| *ready).await.is_ok()
    }

    /// Whether the first full list is in, without waiting.
    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }
}

/// Passes a reflector's events through, and signals readiness at the end of each full list.
///
/// Put it after the `reflector`, so the store holds the list by the time waiters wake.
pub fn signal_when_listed<K, E, S>(
    stream: S,
    signal: CacheReadySignal,
) -> impl Stream<Item = Result<watcher::Event<K>, E>>
where
    S: Stream<Item = Result<watcher::Event<K>, E>>,
{
    stream.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            signal.0.send_replace(true);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn every_waiter_wakes_when_the_first_list_is_in() {
        let (signal, ready) = cache_ready();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let ready = ready.clone();
                tokio::spawn(async move { ready.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!ready.is_ready());
        let events = futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(watcher::Event::<ConfigMap>::Init),
            Ok(watcher::Event::InitDone),
        ]);
        signal_when_listed(events, signal)
            .for_each(|_| async {})
            .await;
        for w in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), w)
                .await
                .expect("a waiter was never woken");
            assert!(woke.unwrap());
        }
        assert!(ready.is_ready());
    }

    #[tokio::test]
    async fn a_watch_gone_before_its_first_list_is_not_ready() {
        let (signal, ready) = cache_ready();
        drop(signal);
        assert!(!ready.wait().await);
    }
}
