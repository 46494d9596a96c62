//! One watch of every Rollout, read by each controller that keeps Rollouts in a cache.
//!
//! The Rollout controller and the GitSync controller's revert writer both cache every Rollout. With
//! a watch each, every status write reached weir twice: sent, received and decoded twice. Here one
//! watch decodes each event once ([`RolloutObject`]) and hands it to every reader.

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::rollout_object::RolloutObject;

/// Events buffered per reader; a reader further behind holds up the watch (and so the others).
const BUFFER: usize = 1024;

/// The watch, before it runs: readers subscribe first, then [`SharedRolloutWatch::run`] drives it.
pub struct SharedRolloutWatch {
    client: Client,
    readers: Vec<mpsc::Sender<watcher::Event<RolloutObject>>>,
}

/// One reader's events: the watch's, in order, each once. Watch errors are retried (with backoff)
/// before they get here, so the stream holds no errors; its item type is the watcher's so that
/// it drops into a reflector.
pub type RolloutEvents = std::pin::Pin<
    Box<dyn Stream<Item = Result<watcher::Event<RolloutObject>, watcher::Error>> + Send>,
>;

impl SharedRolloutWatch {
    /// A watch of every Rollout in the cluster, with no readers yet.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            readers: Vec::new(),
        }
    }

    /// A new reader of every event from the start of the watch.
    pub fn subscribe(&mut self) -> RolloutEvents {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.readers.push(tx);
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (Ok(event), rx))
        }))
    }

    /// Watches until every reader is gone (or the API goes away for good, which the watch does not
    /// give up on).
    pub async fn run(self) {
        let Self {
            client,
            mut readers,
        } = self;
        if readers.is_empty() {
            return;
        }
        let mut events = std::pin::pin!(
            watcher(
                Api::<RolloutObject>::all(client),
                watcher::Config::default()
            )
            .default_backoff()
        );
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(error = %e, "Rollout watch failed; retrying");
                    continue;
                }
            };
            // Every reader but the last gets a copy; the last gets the event itself.
            let mut delivered = Vec::with_capacity(readers.len());
            if let Some((last, others)) = readers.split_last() {
                for reader in others {
                    delivered.push(reader.send(event.clone()).await.is_ok());
                }
                delivered.push(last.send(event).await.is_ok());
            }
            let mut still = delivered.into_iter();
            readers.retain(|_| still.next().unwrap_or(false));
            if readers.is_empty() {
                return;
            }
        }
    }
}

/// Every event of a watch that only `events`'s reader reads: what a controller started on its own
/// (in tests, benches) watches.
pub fn watch_alone(client: Client) -> (RolloutEvents, impl std::future::Future<Output = ()>) {
    let mut watch = SharedRolloutWatch::new(client);
    let events = watch.subscribe();
    (events, watch.run())
}
