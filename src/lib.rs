//! bucketfs: a FUSE filesystem over an S3-compatible bucket.
//!
//! Layers, top to bottom (nothing calls up): `cli` (arguments, daemon,
//! subcommands), `fuse` (the kernel adapter), `fs` (POSIX semantics over
//! objects), `read` and `write` (data paths), and `s3` (the object-store
//! client). See ARCHITECTURE.md.

pub mod cli;
pub mod fs;
pub mod fuse;
pub mod local_dir;
pub mod read;
pub mod s3;
pub mod store;
pub mod write;
