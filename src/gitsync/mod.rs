pub mod git;
pub mod render;
