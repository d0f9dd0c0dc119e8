//! The command line: argument parsing (clap, plus `-o` mount options),
//! logging set-up, and dispatch to the subcommands.

mod ls;
pub mod mount_options;
pub mod s3_options;
pub mod source;
pub mod units;

use clap::{CommandFactory, Parser, Subcommand};

/// Mount an S3-compatible bucket (Backblaze B2, AWS S3, ...) as a directory.
#[derive(Debug, Parser)]
#[command(name = "bucketfs", version, about, long_about = None)]
pub struct Cli {
    /// Log every request (to stderr).
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a bucket's keys (or versions) with the mount's client, to check
    /// credentials and endpoint.
    Ls(ls::LsArgs),
}

/// Logs go to stderr. `--debug` turns on bucketfs's request log;
/// `BUCKETFS_LOG` sets bucketfs's level directly (`trace`, `debug`...).
/// Other crates stay at `warn` whatever is asked, because HTTP and TLS
/// internals at debug level would print request headers.
fn init_logging(debug: bool) {
    let level = std::env::var("BUCKETFS_LOG")
        .ok()
        .filter(|l| ["error", "warn", "info", "debug", "trace"].contains(&l.as_str()))
        .unwrap_or_else(|| if debug { "debug" } else { "warn" }.to_owned());
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,bucketfs={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
    init_logging(cli.debug);
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ls(args) => ls::run(args).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bucketfs: {e:#}");
            1
        }
    }
}
