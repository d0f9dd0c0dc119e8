//! `mount.bucketfs`: the binary called the way mount(8) calls a helper.
//!
//! `mount -t bucketfs SOURCE DIR -o OPTS` and an fstab entry of type
//! `bucketfs` make mount(8) run `/sbin/mount.bucketfs SOURCE DIR [-sfnv]
//! [-N NS] [-o OPTS] [-t TYPE]`. That is a different grammar from ours
//! (`-f` there means "fake", here "foreground"), so a binary started under
//! a `mount.*` name reads it here and hands the normal parser an argument
//! list plus what the helper flags asked for. (`fuse.bucketfs` entries go
//! through mount.fuse3 instead, which already calls `bucketfs SOURCE DIR -o
//! OPTS`.)

use std::ffi::OsString;
use std::path::Path;

/// What mount(8) asked of the helper besides the mount itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HelperFlags {
    /// `-f`: check everything, mount nothing.
    pub fake: bool,
    /// `-s`: ignore options we do not know (with a warning) instead of
    /// failing on them.
    pub sloppy: bool,
    /// `-v`: say what is being done.
    pub verbose: bool,
}

/// Whether this process was started as a mount helper (`mount.bucketfs`,
/// usually a link to the `bucketfs` binary).
pub fn is_helper(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("mount."))
}

/// Turn a helper's argument list into `bucketfs SOURCE DIR -o OPTS`, and
/// the helper flags.
pub fn parse(args: Vec<OsString>) -> Result<(Vec<OsString>, HelperFlags), String> {
    let mut flags = HelperFlags::default();
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut iter = args.into_iter();
    let program = iter.next().unwrap_or_else(|| "mount.bucketfs".into());
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            positional.push(arg);
            continue;
        };
        if !text.starts_with('-') || text == "-" {
            positional.push(arg);
            continue;
        }
        // Short flags may be grouped (`-sfv`), and -o/-t/-N take a value
        // either attached (`-oro`) or as the next argument.
        for (i, c) in text[1..].char_indices() {
            match c {
                's' => flags.sloppy = true,
                'f' => flags.fake = true,
                'v' => flags.verbose = true,
                'n' => {} // no /etc/mtab to write: the kernel keeps the table
                'o' | 't' | 'N' => {
                    let attached = &text[1 + i + 1..];
                    let value = if attached.is_empty() {
                        iter.next()
                            .and_then(|v| v.into_string().ok())
                            .ok_or_else(|| format!("-{c} needs a value"))?
                    } else {
                        attached.to_owned()
                    };
                    match c {
                        'o' => options.push(value),
                        't' => check_type(&value)?,
                        _ => {
                            return Err(
                                "mount -N (another mount namespace) is not supported".to_owned()
                            )
                        }
                    }
                    break;
                }
                other => return Err(format!("unknown mount helper flag -{other}")),
            }
        }
    }
    if positional.len() != 2 {
        return Err("usage: mount.bucketfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]".to_owned());
    }
    let mut out = vec![program];
    out.extend(positional);
    for list in options {
        out.push("-o".into());
        out.push(list.into());
    }
    Ok((out, flags))
}

fn check_type(fstype: &str) -> Result<(), String> {
    match fstype {
        "bucketfs" | "fuse.bucketfs" | "fuseblk.bucketfs" => Ok(()),
        other => Err(format!(
            "mount.bucketfs cannot mount file systems of type {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<(Vec<String>, HelperFlags), String> {
        parse(args.iter().map(OsString::from).collect())
            .map(|(v, f)| (v.into_iter().map(|s| s.into_string().unwrap()).collect(), f))
    }

    #[test]
    fn mount_8_arguments_become_ours() {
        let (args, flags) = run(&[
            "/sbin/mount.bucketfs",
            "b:/p",
            "/mnt",
            "-v",
            "-o",
            "ro,_netdev",
        ])
        .unwrap();
        assert_eq!(
            args,
            ["/sbin/mount.bucketfs", "b:/p", "/mnt", "-o", "ro,_netdev"]
        );
        assert_eq!(
            flags,
            HelperFlags {
                verbose: true,
                ..Default::default()
            }
        );
        let (args, flags) = run(&[
            "mount.bucketfs",
            "b",
            "/mnt",
            "-sfn",
            "-orw",
            "-t",
            "bucketfs",
        ])
        .unwrap();
        assert_eq!(args, ["mount.bucketfs", "b", "/mnt", "-o", "rw"]);
        assert!(flags.fake && flags.sloppy && !flags.verbose);
    }

    #[test]
    fn bad_helper_calls_are_named() {
        assert!(run(&["mount.bucketfs", "b"]).unwrap_err().contains("usage"));
        assert!(run(&["mount.bucketfs", "b", "/m", "-x"])
            .unwrap_err()
            .contains("-x"));
        assert!(run(&["mount.bucketfs", "b", "/m", "-t", "ext4"])
            .unwrap_err()
            .contains("ext4"));
        assert!(run(&["mount.bucketfs", "b", "/m", "-o"]).is_err());
        assert!(is_helper(&"/sbin/mount.bucketfs".into()));
        assert!(!is_helper(&"/usr/bin/bucketfs".into()));
    }
}
