//! The read path: a block cache shared by all open files (`cache`), a
//! second tier on disk that survives remounts and is shared by mounts
//! (`disk_cache`), and a reader per open file that detects sequential
//! access and prefetches ahead of it (`reader`).

pub mod cache;
pub mod disk_cache;
pub mod error;
pub mod reader;

pub use cache::{BlockCache, ObjectVersionKey, BLOCK_SIZE};
pub use disk_cache::DiskCache;
pub use error::ReadError;
pub use reader::{ObjectToRead, ReadContext, ReadTuning, Reader};
