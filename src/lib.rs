//! bucketfs: a FUSE filesystem over an S3-compatible bucket.
//!
//! Layers, top to bottom (nothing calls up): `cli` (arguments, logging,
//! subcommands) and `s3` (the object-store client). See ARCHITECTURE.md.

pub mod cli;
pub mod fs;
pub mod fuse;
pub mod read;
pub mod s3;
pub mod write;
