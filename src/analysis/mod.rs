//! Analysis: deciding from measured metrics whether a release is good.
//!
//! The modules here are pure logic: [`value`] is what a provider measured, [`condition`] the
//! CEL conditions over it, and [`assessment`] turns measurements into metric and run phases.
pub mod assessment;
pub mod condition;
pub mod providers;
pub mod runs;
pub mod value;
