//! Analysis: deciding from measured metrics whether a release is good.
//!
//! [`value`] is what a provider measured, [`condition`] the CEL conditions over it, and
//! [`assessment`] turns measurements into metric and run phases (all pure). [`providers`] take the
//! measurements (Prometheus, web), [`runs`] makes runs from templates, and [`controller`] drives them.
pub mod assessment;
pub mod condition;
pub mod controller;
pub mod providers;
pub mod runs;
pub mod value;
