pub mod git;
pub mod ownership;
pub mod render;
