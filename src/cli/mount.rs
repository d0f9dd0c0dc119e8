//! `bucketfs SOURCE MOUNTPOINT`: check, daemonize, mount, serve, unmount.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use clap::Args;
#[cfg(not(target_os = "linux"))]
use fuser::MountOption;
use fuser::SessionACL;

use super::daemon::{self, Forked, Reporter};
#[cfg(target_os = "linux")]
use super::kernel_mount::{self, KernelMount};
use super::kernel_mount::{top_mount, KernelOptions};
use super::logging::{self, LogTarget};
use super::mount_helper::HelperFlags;
use super::s3_options::S3Options;
use super::source::Source;
use super::units::{parse_duration, parse_size};
use crate::fs::attr::AttrDefaults;
use crate::fs::{Fs, FsConfig, VersionsMode};
use crate::fuse::{FuseAdapter, InodeLimit};
use crate::read::ReadTuning;
use crate::s3::{ListRequest, PriceList, S3Client, VersioningStatus};
use crate::write::default_cache_dir;

fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s.trim().trim_start_matches("0o");
    u16::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal digits such as 0644"))
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// BUCKET or BUCKET:/PREFIX to mount.
    #[arg(value_name = "SOURCE")]
    pub source: Option<Source>,

    /// Directory to mount it on (must exist and be empty).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: Option<PathBuf>,

    /// Stay in the foreground instead of daemonizing; log to stderr.
    #[arg(short, long, help_heading = "Mount")]
    pub foreground: bool,

    /// Mount read-only.
    #[arg(
        long,
        alias = "ro",
        overrides_with = "read_write",
        help_heading = "Mount"
    )]
    pub read_only: bool,

    /// Mount read-write (the default; undoes an earlier `ro`, as fstab's
    /// `rw` does).
    #[arg(long = "rw", hide = true, overrides_with = "read_only")]
    pub read_write: bool,

    /// Honour device files on the mount (root only) [default: nodev].
    #[arg(long, overrides_with = "nodev", help_heading = "Mount")]
    pub dev: bool,

    #[arg(long, hide = true, overrides_with = "dev")]
    pub nodev: bool,

    /// Honour set-user-id and set-group-id bits (root only) [default:
    /// nosuid].
    #[arg(long, overrides_with = "nosuid", help_heading = "Mount")]
    pub suid: bool,

    #[arg(long, hide = true, overrides_with = "suid")]
    pub nosuid: bool,

    /// Do not let programs be run from the mount [default: exec].
    #[arg(long, overrides_with = "exec", help_heading = "Mount")]
    pub noexec: bool,

    #[arg(long, hide = true, overrides_with = "noexec")]
    pub exec: bool,

    /// Let other users use the mount (needs user_allow_other in
    /// /etc/fuse.conf for non-root); turns on default_permissions.
    #[arg(long, help_heading = "Mount")]
    pub allow_other: bool,

    /// Let root use the mount too.
    #[arg(long, conflicts_with = "allow_other", help_heading = "Mount")]
    pub allow_root: bool,

    /// Have the kernel check file modes (on by default with allow_other).
    #[arg(long, help_heading = "Mount")]
    pub default_permissions: bool,

    /// With allow_other, let every user open every file whatever its mode
    /// (turns default_permissions off; only when asked for by name).
    #[arg(
        long,
        requires = "allow_other",
        conflicts_with = "default_permissions",
        help_heading = "Mount"
    )]
    pub no_default_permissions: bool,

    /// Mount over a directory that is not empty.
    #[arg(long, help_heading = "Mount")]
    pub nonempty: bool,

    /// Owner of files without uid metadata [default: the mounting user].
    #[arg(long, help_heading = "Files")]
    pub uid: Option<u32>,

    /// Group of files without gid metadata [default: the mounting group].
    #[arg(long, help_heading = "Files")]
    pub gid: Option<u32>,

    /// Bits to clear from default modes (octal), as s3fs's umask.
    #[arg(long, value_parser = parse_mode, help_heading = "Files")]
    pub umask: Option<u16>,

    /// Mode of files without mode metadata (octal) [default: 0644].
    #[arg(long, value_parser = parse_mode, help_heading = "Files")]
    pub file_mode: Option<u16>,

    /// Mode of directories without mode metadata (octal) [default: 0755].
    #[arg(long, value_parser = parse_mode, help_heading = "Files")]
    pub dir_mode: Option<u16>,

    /// How long attributes and listings are trusted before asking S3 again.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Caching")]
    pub metadata_ttl: Duration,

    /// Show entries of a listing with the size and LastModified it gives
    /// and the default mode and owner, without a HEAD per object this mount
    /// has not seen: faster and cheaper for big directories, but symlinks,
    /// modes, owners and mtimes set by s3fs-style metadata show wrong until
    /// each file is looked up. Off by default.
    #[arg(long, help_heading = "Caching")]
    pub trust_listings: bool,

    /// Most inodes the kernel is let hold (names it looked up or listed):
    /// past it, the least recently used files are dropped from its cache
    /// and looked up again when next used, so a walk of millions of files
    /// keeps the daemon's memory bounded. 0: no bound.
    #[arg(long, default_value_t = 100_000, help_heading = "Caching")]
    pub max_inodes: usize,

    /// How long a missing name is trusted to stay missing.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Caching")]
    pub negative_ttl: Duration,

    /// Memory for cached file data, shared by all open files.
    #[arg(long, default_value = "128MiB", value_parser = parse_size_arg, help_heading = "Caching")]
    pub cache_size: u64,

    /// Size of one ranged GET of a sequential read (and of upload parts).
    #[arg(long, default_value = "8MiB", value_parser = parse_size_arg, help_heading = "Transfers")]
    pub part_size: u64,

    /// Most bytes read ahead of one sequential reader.
    #[arg(long, default_value = "64MiB", value_parser = parse_size_arg, help_heading = "Transfers")]
    pub read_ahead_max: u64,

    /// Most S3 requests for file data in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Transfers")]
    pub max_concurrency: u32,

    /// Directory for staging files of writes in progress [default:
    /// /var/cache/bucketfs for root, else ~/.cache/bucketfs].
    #[arg(long, value_name = "DIR", help_heading = "Caching")]
    pub cache_dir: Option<PathBuf>,

    /// Keep file data read (and written) in this directory too, across
    /// remounts and shared by every mount that names it: a second tier
    /// under the memory cache. Off by default.
    #[arg(long, value_name = "DIR", help_heading = "Caching")]
    pub disk_cache: Option<PathBuf>,

    /// Most bytes of file data the disk cache holds; the least recently
    /// opened files go first.
    #[arg(long, default_value = "5GiB", value_parser = parse_size_arg, help_heading = "Caching")]
    pub disk_cache_size: u64,

    /// Read files the disk cache holds whole through the daemon, not by
    /// FUSE passthrough. Passthrough (Linux 6.9+, as root) serves their
    /// reads at local-disk speed, but while a file is open that way it
    /// cannot be opened for writing (ETXTBSY) on this mount.
    #[arg(long, help_heading = "Caching")]
    pub no_passthrough: bool,

    /// Memory for uploads in flight, shared by all files being written.
    #[arg(long, default_value = "64MiB", value_parser = parse_size_arg, help_heading = "Transfers")]
    pub write_buffer: u64,

    /// The `.versions` view of the bucket's history: reachable by name
    /// (hidden), also listed in the root (visible), or none (off).
    #[arg(long, value_enum, default_value = "hidden", help_heading = "Files")]
    pub versions: VersionsMode,

    /// Write logs here when daemonized [default: syslog].
    #[arg(long, value_name = "FILE", help_heading = "Mount")]
    pub log_file: Option<PathBuf>,

    /// Write the daemon's process id here once mounted.
    #[arg(long, value_name = "FILE", help_heading = "Mount")]
    pub pid_file: Option<PathBuf>,

    #[command(flatten)]
    pub s3: S3Options,

    #[cfg(target_os = "macos")]
    #[command(flatten)]
    pub macos: MacosArgs,
}

/// Options only macFUSE knows.
#[cfg(target_os = "macos")]
#[derive(Debug, Args)]
pub struct MacosArgs {
    /// Name of the volume in Finder [default: the source, BUCKET:/PREFIX].
    #[arg(long, help_heading = "macOS")]
    pub volname: Option<String>,

    /// Keep Finder's `._*` AppleDouble files out of the bucket.
    #[arg(long, help_heading = "macOS")]
    pub noappledouble: bool,
}

impl MountArgs {
    fn check(&self) -> anyhow::Result<()> {
        // SAFETY: geteuid has no preconditions.
        if (self.dev || self.suid) && unsafe { libc::geteuid() } != 0 {
            bail!("dev and suid need root: the kernel forces nodev,nosuid on a user's FUSE mount");
        }
        if self.part_size < 5 * 1024 * 1024 || self.part_size > 5 * 1024 * 1024 * 1024 {
            bail!("part_size must be between 5MiB and 5GiB (S3's part limits)");
        }
        if self.read_ahead_max < 1024 * 1024 {
            bail!("read_ahead_max must be at least 1MiB");
        }
        Ok(())
    }
}

/// Check the mount point before anything else happens.
/// Say once whether the bucket keeps versions: it decides whether an
/// overwrite or a delete can be undone from `.versions`, and how two
/// writers of one file end (SEMANTICS.md "Two writers of one file"). B2
/// buckets always keep them, so B2 is not asked; nor is a server priced
/// as B2 (`--price-list b2`: B2 behind another name, most often), where
/// the request would be class C for a log line. Elsewhere one
/// GetBucketVersioning, whose refusal (a key without the permission)
/// only leaves this unsaid.
async fn report_versioning(client: &S3Client) {
    let status = if client.endpoint().is_b2() {
        VersioningStatus::Enabled
    } else if client.price_list() == PriceList::B2 {
        tracing::debug!(
            "not asking whether the bucket keeps versions: bucket calls are class C under B2's prices"
        );
        return;
    } else {
        match client.get_bucket_versioning().await {
            Ok(status) => status,
            Err(e) => {
                tracing::debug!("cannot tell whether the bucket keeps versions: {e}");
                return;
            }
        }
    };
    match status {
        VersioningStatus::Enabled => tracing::info!(
            "bucket {} keeps every version: overwritten and deleted files stay under .versions",
            client.bucket()
        ),
        VersioningStatus::Suspended => tracing::info!(
            "bucket {} has versioning suspended: an overwrite or a delete is final, and only \
             versions made before the suspension stay under .versions",
            client.bucket()
        ),
        VersioningStatus::Unversioned => tracing::info!(
            "bucket {} keeps no versions: an overwrite or a delete is final",
            client.bucket()
        ),
    }
}

fn check_mountpoint(path: &Path, nonempty: bool) -> anyhow::Result<PathBuf> {
    let canonical = path
        .canonicalize()
        .map_err(|e| anyhow!("mountpoint {}: {}", path.display(), e))?;
    if !canonical.is_dir() {
        bail!("mountpoint {} is not a directory", path.display());
    }
    // Listing an automount point (x-systemd.automount) would ask systemd
    // for the mount being made here, and wait for ourselves.
    let automount = top_mount(&canonical).is_some_and(|m| m.fstype == "autofs");
    if !nonempty && !automount {
        let mut entries = std::fs::read_dir(&canonical)
            .map_err(|e| anyhow!("mountpoint {}: {}", path.display(), e))?;
        if entries.next().is_some() {
            bail!(
                "mountpoint {} is not empty (use --nonempty / -o nonempty to mount over it)",
                path.display()
            );
        }
    }
    Ok(canonical)
}

fn check_fuse() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "FUSE is not available: /dev/fuse is missing (load the fuse module or install fuse3)"
        );
    }
    Ok(())
}

/// The kernel reads ahead only 128 KiB on a new FUSE mount, which caps a
/// single sequential reader's throughput. Raise the mount's readahead (its
/// backing device info in sysfs) to up to 16 MiB. The device number comes
/// from mountinfo: a `stat` of the mount point would ask our own, not yet
/// running, session. Needs root; a failure only costs speed.
fn raise_readahead(mountpoint: &Path, read_ahead_max: u64) {
    let Some(device) = top_mount(mountpoint).map(|m| m.device) else {
        return;
    };
    let kib = (read_ahead_max / 1024).clamp(128, 16 * 1024);
    let path = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => tracing::debug!("readahead of {} set to {kib} KiB", mountpoint.display()),
        Err(e) => tracing::debug!("cannot raise readahead ({path}): {e}"),
    }
}

/// Run the mount command; returns the exit code. `helper` carries what
/// mount(8) asked of `mount.bucketfs` (nothing when run as `bucketfs`).
pub fn run(args: MountArgs, debug: bool, helper: &HelperFlags) -> i32 {
    let (Some(source), Some(mountpoint)) = (args.source.clone(), args.mountpoint.clone()) else {
        eprintln!("bucketfs: usage: bucketfs [OPTIONS] BUCKET[:/PREFIX] MOUNTPOINT (see --help)");
        return 2;
    };
    // Everything that can be checked without the network is checked before
    // forking, so that usage errors come straight back.
    // `mount -f` checks an entry that may be mounted already: not empty.
    let checked = args
        .check()
        .and_then(|()| check_fuse())
        .and_then(|()| check_mountpoint(&mountpoint, args.nonempty || helper.fake));
    let mountpoint = match checked {
        Ok(m) => m,
        Err(e) => {
            eprintln!("bucketfs: {e:#}");
            return 1;
        }
    };
    if helper.verbose {
        eprintln!("bucketfs: mounting {source} on {}", mountpoint.display());
    }
    if helper.fake {
        // `mount -f`: everything checked that can be without mounting.
        return 0;
    }
    let mut reporter = if args.foreground {
        Reporter::foreground()
    } else {
        match daemon::daemonize() {
            Ok(Forked::Parent(code)) => return code,
            Ok(Forked::Child(reporter)) => reporter,
            Err(e) => {
                eprintln!("bucketfs: cannot fork: {e}");
                return 1;
            }
        }
    };
    let target = match (&args.log_file, reporter.is_daemon()) {
        (_, false) => LogTarget::Stderr,
        (Some(path), true) => LogTarget::File(path),
        (None, true) => LogTarget::Syslog,
    };
    if let Err(e) = logging::init(debug, "info", target) {
        reporter.fail(&format!("cannot open the log file: {e}"));
        return 1;
    }
    match serve(&args, source, &mountpoint, &mut reporter) {
        Ok(()) => 0,
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!("{message}");
            reporter.fail(&message);
            1
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena, up to
/// eight per core, and memory freed in one arena is not reused by the
/// others. Staging I/O leaves the async workers (`write::blocking`), so
/// the runtime starts threads as the disk slows, and with them arenas:
/// under sixteen busy files the daemon's peak grew from about 160 MiB to
/// 200–270 MiB. Two arenas keep it where it was; the daemon's threads
/// mostly wait on the network, not on malloc.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn serve(
    args: &MountArgs,
    source: Source,
    mountpoint: &Path,
    reporter: &mut Reporter,
) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bucketfs-worker")
        .build()
        .context("cannot start the async runtime")?;
    let client = runtime.block_on(args.s3.client(&source.bucket))?;

    // Credentials and bucket, checked with a listing (its error body
    // names the problem, where a HEAD's would not). It is the first page
    // of the root's listing, which costs what a one-key listing costs
    // (class C on B2) and is kept as the root's name index (below).
    // A refusal on B2 is explained by what its native API says the key
    // may do (a prefix to mount, a missing capability).
    let root_page = runtime.block_on(async {
        let e = match client
            .list_objects(&ListRequest {
                prefix: source.prefix.clone(),
                delimiter: Some("/".into()),
                ..Default::default()
            })
            .await
        {
            Ok(page) => return Ok(page),
            Err(e) => e,
        };
        let why = match e.status() {
            Some(401 | 403) => {
                args.s3
                    .explain_refusal(&client, &source.bucket, &source.prefix)
                    .await
            }
            _ => None,
        };
        Err(match why {
            Some(why) => anyhow!("cannot use bucket {}: {why} ({e})", source.bucket),
            // Where the server does not say why, a root refused to a
            // valid key is most often a key limited to a prefix.
            None if e.is_access_denied() && source.prefix.is_empty() => anyhow!(
                "cannot use bucket {}: {} (a key limited to a prefix mounts it as {}:/PREFIX)",
                source.bucket,
                e.user_message(),
                source.bucket
            ),
            None => anyhow!("cannot use bucket {}: {}", source.bucket, e.user_message()),
        })
    })?;
    runtime.block_on(report_versioning(&client));
    match client.price_list().reupload_up_to() {
        0 => tracing::info!(
            "copies follow {:?}'s prices: renames, chmod and cp inside the mount copy server-side",
            client.price_list()
        ),
        limit => tracing::info!(
            "copies follow {:?}'s prices: objects up to {limit} bytes are copied by a GET and a \
             PUT, which cost less there than a server-side copy",
            client.price_list()
        ),
    }

    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let umask = args.umask.unwrap_or(0o022);
    let config = FsConfig {
        prefix: source.prefix.clone(),
        attrs: AttrDefaults {
            uid: args.uid.unwrap_or(uid),
            gid: args.gid.unwrap_or(gid),
            file_perm: args.file_mode.unwrap_or(0o666 & !umask),
            dir_perm: args.dir_mode.unwrap_or(0o777 & !umask),
            mount_time: SystemTime::now(),
        },
        metadata_ttl: args.metadata_ttl,
        negative_ttl: args.negative_ttl,
        trust_listings: args.trust_listings,
        read_only: args.read_only,
        read: ReadTuning {
            part_size: args.part_size,
            read_ahead_max: args.read_ahead_max,
            initial_window: 1024 * 1024,
            cache_size: args.cache_size,
            max_concurrency: args.max_concurrency as usize,
        },
        cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
        disk_cache: args
            .disk_cache
            .clone()
            .map(|dir| (dir, args.disk_cache_size)),
        write_buffer: args.write_buffer,
        part_size: args.part_size,
        versions: args.versions,
    };
    let fs = Arc::new(
        Fs::new(Arc::new(client), config)
            .map_err(|e| anyhow!("cannot use the cache directory: {e}"))?,
    );
    // What an earlier mount that died left: abort its uploads, report its data.
    let moved = runtime.block_on(fs.recover());
    if !moved {
        fs.seed_root_index(root_page);
    }
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), !args.no_passthrough);

    let default_permissions =
        !args.no_default_permissions && (args.allow_other || args.default_permissions);
    if args.no_default_permissions {
        tracing::warn!(
            "allow_other without default_permissions: file modes are not enforced for other users"
        );
    }
    let acl = if args.allow_other {
        SessionACL::All
    } else if args.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    let fsname = source.to_string();
    let kernel = KernelOptions {
        fsname: &fsname,
        read_only: args.read_only,
        dev: args.dev,
        suid: args.suid,
        exec: !args.noexec,
        allow_other: acl != SessionACL::Owner,
        default_permissions,
    };
    // SIGINT and SIGTERM are caught from before the mount appears: a
    // signal sent as soon as it is visible must unmount, not kill.
    let (mut term, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _context = runtime.enter();
        (
            signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        )
    };
    let (session, unmounter) = mount_session(adapter, mountpoint, &kernel, acl, args)?;
    let notifier = session.notifier();
    // Shared by the signal handler (unmount) and the end of the session
    // (detach a dead mount).
    let unmounter = Arc::new(parking_lot::Mutex::new(unmounter));
    tracing::info!("mounted {source} on {}", mountpoint.display());

    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", pid_file.display()))?;
    }

    // SIGINT and SIGTERM unmount, which ends the session loop below.
    let shown = mountpoint.display().to_string();
    let signal_fs = fs.clone();
    let signal_unmounter = unmounter.clone();
    runtime.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received: saving pending writes, then unmounting {shown}");
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        signal_fs.flush_all().await;
        // The mount can be busy for a moment (a file being closed): try
        // again, then detach it rather than serve on after the signal.
        let mut unmounted = Ok(());
        for _ in 0..UNMOUNT_ATTEMPTS {
            unmounted = signal_unmounter.lock().unmount();
            if unmounted.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if let Err(e) = unmounted {
            tracing::error!("unmount of {shown} failed: {e}; detaching it");
            signal_unmounter.lock().detach();
        }
    });

    raise_readahead(mountpoint, args.read_ahead_max);
    // Asked before `ok`, which hands the pipe over and ends the reporter.
    let daemon = reporter.is_daemon();
    reporter.ok();
    if daemon {
        daemon::detach_stdio();
    }
    // For a `Type=notify` unit: the mount is live, and this is the process
    // to watch (after a fork it is not the one systemd started).
    notify_systemd(&[
        sd_notify::NotifyState::MainPid(std::process::id()),
        sd_notify::NotifyState::Ready,
    ]);
    // Past this point the mount is live: a thread that cannot start costs
    // memory on big walks, not the mount.
    let inode_limit =
        InodeLimit::start(fs.clone(), notifier, args.max_inodes).unwrap_or_else(|e| {
            tracing::warn!("no bound on the inodes the kernel holds: cannot start its thread: {e}");
            None
        });
    let result = session.run();
    if let Some(limit) = inode_limit {
        limit.stop();
    }
    if result.is_err() {
        unmounter.lock().detach();
    }
    tracing::info!("unmounted {}", mountpoint.display());
    // The last closes, sent by the kernel before the unmount, finish.
    runtime.block_on(fs.releases_done(Duration::from_secs(30)));
    // Anything a failed upload left: one last try, else it stays staged.
    runtime.block_on(fs.flush_all());
    // What was read reaches the disk cache, for the next mount.
    if let Some(disk) = fs.read_context().disk_cache() {
        runtime.block_on(disk.drain(Duration::from_secs(30)));
    }
    fs.cleanup();
    runtime.shutdown_timeout(Duration::from_secs(5));
    result.map_err(|e| anyhow!("FUSE session ended with an error: {e}"))
}

/// Tell systemd how the mount is doing, when it asked (`NOTIFY_SOCKET`);
/// a no-op otherwise.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Unmounts tried after SIGTERM before the mount is detached instead.
const UNMOUNT_ATTEMPTS: u32 = 10;

/// How the mount is undone on SIGTERM, and after a session that died.
enum Unmounter {
    /// A mount made by `kernel_mount` (root on Linux).
    #[cfg(target_os = "linux")]
    Kernel(KernelMount),
    /// A mount made by fuser (macOS).
    #[cfg(not(target_os = "linux"))]
    Fuser(Box<dyn FnMut() -> std::io::Result<()> + Send>),
}

impl Unmounter {
    fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Unmounter::Kernel(mount) => mount.unmount(),
            #[cfg(not(target_os = "linux"))]
            Unmounter::Fuser(unmount) => unmount(),
        }
    }

    /// After the session ended with an error: do not leave a dead mount.
    fn detach(&mut self) {
        match self {
            #[cfg(target_os = "linux")]
            Unmounter::Kernel(mount) => mount.detach(),
            // fuser unmounts its own mount when the session is dropped.
            #[cfg(not(target_os = "linux"))]
            Unmounter::Fuser(_) => {}
        }
    }
}

/// Mount and start a FUSE session on `mountpoint`: on Linux through
/// `kernel_mount` (mount(2) for root, fusermount3 for users), elsewhere
/// through fuser. (`args` is read only for macFUSE's own options.)
#[cfg_attr(target_os = "linux", allow(unused_variables))]
fn mount_session(
    adapter: FuseAdapter,
    mountpoint: &Path,
    kernel: &KernelOptions<'_>,
    acl: SessionACL,
    args: &MountArgs,
) -> anyhow::Result<(fuser::Session<FuseAdapter>, Unmounter)> {
    let mut config = fuser::Config::default();
    config.acl = acl;
    // Two kernel-reading threads with their own /dev/fuse clones (the
    // work itself runs on the tokio runtime); fuser supports more than
    // one only on Linux.
    if cfg!(target_os = "linux") {
        config.n_threads = Some(2);
        config.clone_fd = true;
    }
    let failed = |e: std::io::Error| anyhow!("cannot mount on {}: {}", mountpoint.display(), e);

    #[cfg(target_os = "linux")]
    {
        let (device, mount) = kernel_mount::mount(mountpoint, kernel).map_err(failed)?;
        match fuser::Session::from_fd(adapter, device, acl, config) {
            Ok(session) => Ok((session, Unmounter::Kernel(mount))),
            Err(e) => {
                mount.detach();
                Err(failed(e))
            }
        }
    }

    // Elsewhere (macOS), fuser mounts through the system's FUSE.
    #[cfg(not(target_os = "linux"))]
    {
        let mut options = vec![
            MountOption::FSName(kernel.fsname.to_owned()),
            MountOption::Subtype("bucketfs".into()),
            MountOption::NoAtime,
            if kernel.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
            if kernel.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
            if kernel.exec {
                MountOption::Exec
            } else {
                MountOption::NoExec
            },
        ];
        if kernel.read_only {
            options.push(MountOption::RO);
        }
        if kernel.default_permissions {
            options.push(MountOption::DefaultPermissions);
        }
        config.mount_options = options;
        let mut session = fuser::Session::new(adapter, mountpoint, &config).map_err(failed)?;
        let mut unmount = session.unmount_callable();
        Ok((
            session,
            Unmounter::Fuser(Box::new(move || unmount.unmount())),
        ))
    }
}
