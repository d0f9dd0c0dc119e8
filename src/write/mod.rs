//! The write path: staging files (`staging`), which bytes are local
//! (`ranges`), where part boundaries fall (`layout`), memory for streamed
//! parts (`part_pool`), and a dirty file with its streaming and staged
//! uploads (`dirty`).

mod blocking;
mod context;
mod copy_pin;
pub mod dirty;
pub mod error;
pub mod journal;
pub mod layout;
pub mod part_pool;
pub mod ranges;
pub mod staging;

pub use context::WriteContext;
pub use dirty::{mtime_value, BaseObject, DirtyFile, ReadAccess};
pub use error::WriteError;
pub use layout::PartLayout;
pub use staging::{default_cache_dir, StagingDir};
