//! The command line: argument parsing (clap, plus `-o` mount options) and
//! dispatch to the mount or a subcommand.

mod cleanup;
mod daemon;
mod kernel_mount;
mod logging;
mod ls;
pub mod mount;
pub mod mount_helper;
pub mod mount_options;
mod restore;
pub mod s3_options;
pub mod source;
pub mod units;

use clap::{CommandFactory, Parser, Subcommand};

/// The end of `--help` and of the man page: the ways to mount, and where
/// credentials come from.
const AFTER_HELP: &str = concat!(
    "Mounting through mount(8) and /etc/fstab (type fuse.bucketfs or bucketfs):\n",
    "\n",
    "  mount -t bucketfs my-bucket:/photos /mnt/photos -o passwd_file=/etc/bucketfs/passwd\n",
    "  my-bucket:/photos /mnt/photos fuse.bucketfs _netdev,passwd_file=/etc/bucketfs/passwd 0 0\n",
    "\n",
    "Generic options (defaults, auto, noauto, user, users, nofail, _netdev, x-systemd.*, ",
    "comment=) are accepted; rw/ro, dev/nodev, suid/nosuid and exec/noexec set the mount's ",
    "flags; an unknown option is an error naming it.\n",
    "\n",
    "Credentials, the first found wins: --passwd-file (lines KEY:SECRET or BUCKET:KEY:SECRET, ",
    "mode 600); --profile of ~/.aws/credentials; AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ",
    "or B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY; ~/.aws with AWS_PROFILE or default (static ",
    "keys, role_arn, credential_process, SSO); AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; ",
    "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI); EC2 instance metadata. ",
    "Temporary keys are refreshed before they expire.\n",
    "\n",
    "Unmount with umount or fusermount3 -u; SIGTERM saves pending writes, then unmounts. ",
    "A file written is in the bucket when close or fsync returns. Its history is under ",
    "MOUNTPOINT/.versions/."
);

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
    args_override_self = true,
    after_long_help = AFTER_HELP
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
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (bucketfs.1 and one per subcommand) into DIR;
    /// used to build packages.
    #[command(hide = true)]
    Man { dir: std::path::PathBuf },
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

/// bucketfs.1 from the CLI definition (so the page cannot drift from
/// `--help`), and bucketfs-SUBCOMMAND.1 for each visible subcommand.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    clap_mangen::generate_to(command, dir)
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut helper = mount_helper::HelperFlags::default();
    if args.first().is_some_and(mount_helper::is_helper) {
        match mount_helper::parse(args) {
            Ok((parsed, flags)) => (args, helper) = (parsed, flags),
            Err(e) => {
                eprintln!("mount.bucketfs: {e}");
                return 1;
            }
        }
    }
    let args = match mount_options::translate(args, &Cli::command(), helper.sloppy) {
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
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bucketfs",
                &mut std::io::stdout(),
            );
            0
        }
        Some(Command::Man { dir }) => match write_man_pages(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bucketfs: cannot write man pages to {}: {e}", dir.display());
                1
            }
        },
        None => mount::run(cli.mount, cli.debug, &helper),
    }
}
