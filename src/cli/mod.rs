//! The command line: argument parsing (clap, plus `-o` mount options) and
//! dispatch to the mount or a subcommand.

mod cleanup;
mod daemon;
mod logging;
mod ls;
pub mod mount;
pub mod mount_options;
mod restore;
pub mod s3_options;
pub mod source;
pub mod units;

use clap::{CommandFactory, Parser, Subcommand};

/// Mount an S3-compatible bucket (Backblaze B2, AWS S3, ...) as a directory.
///
/// `bucketfs BUCKET[:/PREFIX] MOUNTPOINT` returns once the mount is live.
/// Every --long-option can also be given as `-o long_option[=value]`.
#[derive(Debug, Parser)]
#[command(
    name = "bucketfs",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    // fstab options come after built-in defaults: the last one given wins.
    args_override_self = true
)]
pub struct Cli {
    /// Log every request (to stderr, or to the log when daemonized).
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub mount: mount::MountArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a bucket's keys (or versions) with the mount's client, to check
    /// credentials and endpoint.
    Ls(ls::LsArgs),
    /// Restore a file or a subtree to a version or an instant, with
    /// server-side copies (deleted files too).
    Restore(restore::RestoreArgs),
    /// Abort unfinished multipart uploads older than a bound (a mount
    /// aborts its own crashed ones by itself).
    Cleanup(cleanup::CleanupArgs),
}

/// Run a one-shot subcommand (not the mount): warnings to stderr, a
/// runtime for its requests, and `bucketfs: reason` with exit code 1 on
/// failure.
fn run_command(
    debug: bool,
    command: impl std::future::Future<Output = anyhow::Result<i32>>,
) -> i32 {
    let _ = logging::init(debug, "warn", logging::LogTarget::Stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bucketfs: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bucketfs: {e:#}");
            1
        }
    }
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let args = match mount_options::translate(std::env::args_os().collect(), &Cli::command()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bucketfs: {e}");
            return 2;
        }
    };
    let cli = Cli::parse_from(args);
    match cli.command {
        Some(Command::Ls(args)) => ls::main(args, cli.debug),
        Some(Command::Restore(args)) => restore::main(args, cli.debug),
        Some(Command::Cleanup(args)) => cleanup::main(args, cli.debug),
        None => mount::run(cli.mount, cli.debug),
    }
}
