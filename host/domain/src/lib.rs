//! Rebound's domain model, free of I/O: protection plans as the documents
//! users write (YAML or JSON, the same schema the API and CLI accept), their
//! validation with errors that name the field, and the lifecycle state
//! machine of a plan (protected → failed over → reprotecting → ready for
//! failback → failing back → protected; migration; permanent failover;
//! drills) with its fencing epoch.
//!
//! The store persists these types and the engine drives them; this crate
//! knows neither.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod duration;
pub mod lifecycle;
pub mod plan;

pub use duration::Span;
pub use lifecycle::{Lifecycle, Phase, PlanState, TransitionError, Workflow};
pub use plan::{FieldError, Objectives, PhaseObjectives, PlanDocument, PlanError};
