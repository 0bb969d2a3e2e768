//! The render crate's tests: the coordinator as given/when/then stories, pixels, the job's
//! input, and Blender itself rendering the same pixels twice.

mod blender;
mod coordinator;
mod pixels;
mod spec;
