//! Render jobs: a scene's frames split across providers, a share of them rendered again on
//! another provider and compared by their decoded pixels, a third provider refereeing a
//! mismatch. [`spec`] is what the buyer asks and the Blender command that renders it the same
//! way everywhere; [`pixels`] the comparison; [`coordinator`] the pure state machine that
//! decides tasks, checks and verdicts. The API's render loop does the I/O around it;
//! [`local`] runs Blender here, for the demo's scene and reference renders.

pub mod coordinator;
pub mod local;
pub mod pixels;
pub mod spec;

pub use coordinator::{Coordinator, Ending, Output, Placement, Policy, Refused, Role, Settled};
pub use pixels::{PixelDigest, Pixels};
pub use spec::{EngineVersion, FrameRange, OutputFormat, Purchase, RenderSpec};

/// Everything wrong with a render job's input; each is the buyer's `VALIDATION` but a budget
/// too low.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("frames: {0}")]
    Frames(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("format: {0}")]
    Format(String),
    #[error("samples: 1 to {0}")]
    Samples(u32),
    #[error("scene: {0}")]
    Scene(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("image: {0}")]
    Image(String),
    #[error("purchase: {0}")]
    Purchase(String),
    /// Blender on this machine ([`local`]) failed or is missing.
    #[error("blender: {0}")]
    Blender(String),
    /// `BUDGET_TOO_LOW`, not `VALIDATION`.
    #[error("the budget {budget} does not cover the job: it needs at least {needed}")]
    Budget {
        needed: contract::Amount,
        budget: contract::Amount,
    },
}
