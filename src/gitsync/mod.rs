//! GitSync: fetch a Git repository, render it, apply it with server-side apply, and revert the
//! commits of a release whose analysis failed.

pub mod apply;
pub mod controller;
pub mod git;
pub mod ownership;
pub mod render;
pub mod revert;
