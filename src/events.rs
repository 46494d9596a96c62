//! Recording core/v1 Events. Each controller names its Events after the transition they record, so
//! a controller restarted between recording an Event and writing the status that follows it finds
//! the Event already there (409) and does not record it twice.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::PostParams;

/// Who records: the field manager (also the Event's source component) and the reporting
/// controller.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    /// Field manager and `source.component`, e.g. `weir-rollout`.
    pub field_manager: &'static str,
    /// `reportingComponent`, e.g. `weir.io/rollout-controller`.
    pub controller: &'static str,
}

/// One Event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Its name, derived from what it records.
    pub name: String,
    /// Reason, e.g. `RolloutAborted`.
    pub reason: &'a str,
    /// Message for people.
    pub message: &'a str,
    /// Warning rather than Normal.
    pub warning: bool,
}

/// Records `event` about `involved`, in its namespace; an Event of that name already there counts
/// as recorded.
pub async fn record(
    client: &Client,
    reporter: Reporter,
    involved: ObjectReference,
    event: NewEvent<'_>,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let ns = involved.namespace.clone().unwrap_or_default();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(event.name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(event.reason.into()),
        message: Some(event.message.into()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(reporter.field_manager.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(reporter.controller.into()),
        reporting_instance: Some("weir".into()),
        ..Default::default()
    };
    // The answer is not decoded: an Event is written once and never read back, and decoding it
    // (managed fields and all) was most of the call's work.
    let url = <Event as kube::Resource>::url_path(&(), Some(&ns));
    let pp = PostParams {
        field_manager: Some(reporter.field_manager.into()),
        ..Default::default()
    };
    let body = serde_json::to_vec(&ev).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(url)
        .create(&pp, body)
        .map_err(kube::Error::BuildRequest)?;
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        // Only AlreadyExists means an Event of this name is there. Any other 409 (a Conflict)
        // recorded nothing; taking it for success would lose the Event for good, because the
        // status written next says it was recorded.
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}
