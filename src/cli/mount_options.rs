//! `-o name=value,flag` mount options, translated to long flags.
//!
//! fstab and `mount -t` can pass options only as `-o`, so every long flag
//! must be reachable that way: `-o part_size=8MiB` means `--part-size=8MiB`.
//! The clap definition stays the one table of options; this module only
//! rewrites the argument list before clap sees it, refusing names clap does
//! not know so a typo in fstab is an error, not a silently ignored option.

use std::ffi::OsString;

use clap::Command;

/// Options that mount(8), systemd and fstab use for their own purposes
/// (when and by whom to mount, ordering, comments) and that ask nothing of
/// the daemon. `rw`, `ro`, `dev`, `suid`, `exec` and their negations are
/// not here: they are real flags of the mount (see `MountArgs`).
const GENERIC: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "async",
    // Metadata calls (mkdir, rename, unlink) already return only once S3
    // has answered.
    "dirsync",
    // bucketfs keeps no access times (atime reads as mtime, and the mount
    // is always noatime), so no atime policy changes anything.
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
];

fn is_generic(name: &str) -> bool {
    GENERIC.contains(&name) || name.starts_with("x-") || name == "comment"
}

/// Generic options that would promise what bucketfs cannot do: refused
/// with the reason, rather than accepted and silently broken.
fn refused(name: &str) -> Option<&'static str> {
    Some(match name {
        "sync" => "data reaches the bucket at close and fsync, not at every write",
        "remount" => "remount is not supported: unmount and mount again",
        "bind" | "rbind" | "move" => "bind and move mounts are mount(8)'s job, not bucketfs's",
        "mand" => "mandatory locks are not supported",
        _ => return None,
    })
}

/// Long flag names (without `--`) of a command and all its subcommands,
/// with their aliases, and whether each takes a value.
fn known_flags(cmd: &Command) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let takes_value = arg.get_action().takes_values();
        if let Some(long) = arg.get_long() {
            out.push((long.to_owned(), takes_value));
        }
        for alias in arg.get_all_aliases().unwrap_or_default() {
            out.push((alias.to_owned(), takes_value));
        }
    }
    for sub in cmd.get_subcommands() {
        out.extend(known_flags(sub));
    }
    out
}

/// Rewrite `-o a=b,c` (also `-oa=b,c`) into `--a=b --c`. An unknown option
/// is an error naming it, unless `sloppy` (mount's `-s`): then it is
/// skipped with a warning on stderr.
pub fn translate(
    args: Vec<OsString>,
    cmd: &Command,
    sloppy: bool,
) -> Result<Vec<OsString>, String> {
    let flags = known_flags(cmd);
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let list = match arg.to_str() {
            Some("-o") => match iter.next() {
                Some(v) => v
                    .into_string()
                    .map_err(|_| "mount options must be valid UTF-8".to_owned())?,
                None => return Err("-o needs a list of options".to_owned()),
            },
            Some(s) if s.starts_with("-o") && s.len() > 2 => s[2..].to_owned(),
            _ => {
                out.push(arg);
                continue;
            }
        };
        for option in list.split(',').filter(|o| !o.is_empty()) {
            let (name, value) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (option, None),
            };
            if is_generic(name) {
                continue;
            }
            if let Some(reason) = refused(name) {
                return Err(format!("mount option {name:?} is not supported: {reason}"));
            }
            let long = name.replace('_', "-");
            let Some((_, takes_value)) = flags.iter().find(|(f, _)| *f == long) else {
                if sloppy {
                    eprintln!("bucketfs: ignoring unknown mount option {name:?} (sloppy mount)");
                    continue;
                }
                return Err(format!("unknown mount option {name:?}"));
            };
            match (takes_value, value) {
                (true, Some(v)) => out.push(format!("--{long}={v}").into()),
                (true, None) => {
                    return Err(format!("mount option {name:?} needs a value ({name}=...)"))
                }
                (false, None) => out.push(format!("--{long}").into()),
                (false, Some(_)) => return Err(format!("mount option {name:?} takes no value")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("part_size").long("part-size"))
            .arg(
                Arg::new("ro")
                    .long("read-only")
                    .alias("ro")
                    .action(ArgAction::SetTrue),
            )
    }

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        translate(args.iter().map(OsString::from).collect(), &cmd(), false)
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn options_become_long_flags() {
        assert_eq!(
            run(&[
                "b",
                "src",
                "-o",
                "part_size=8MiB,ro,_netdev,x-systemd.automount",
                "mnt"
            ])
            .unwrap(),
            ["b", "src", "--part-size=8MiB", "--ro", "mnt"]
        );
        assert_eq!(
            run(&["b", "-opart_size=1"]).unwrap(),
            ["b", "--part-size=1"]
        );
    }

    #[test]
    fn unknown_and_malformed_options_are_named() {
        assert!(run(&["b", "-o", "bogus=1"])
            .unwrap_err()
            .contains("\"bogus\""));
        assert!(run(&["b", "-o", "part_size"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(run(&["b", "-o", "ro=1"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(run(&["b", "-o"]).is_err());
        assert!(run(&["b", "-o", "sync"])
            .unwrap_err()
            .contains("close and fsync"));
        assert!(run(&["b", "-o", "remount"])
            .unwrap_err()
            .contains("remount"));
    }

    #[test]
    fn sloppy_mounts_skip_unknown_options() {
        let args = ["b", "-o", "bogus=1,part_size=2"]
            .map(OsString::from)
            .to_vec();
        let out = translate(args, &cmd(), true).unwrap();
        assert_eq!(out, ["b", "--part-size=2"].map(OsString::from).to_vec());
    }

    #[test]
    fn what_mount_8_and_systemd_pass_is_accepted() {
        assert_eq!(
            run(&[
                "b",
                "-o",
                "defaults,noauto,user=alice,users,nofail,_netdev,comment=x,x-systemd.automount,x-systemd.idle-timeout=60,noatime,dirsync"
            ])
            .unwrap(),
            ["b"]
        );
    }
}
