//! The programs people run on a mounted bucket, run for real: `cp -a`,
//! `rsync -a` (a new tree, then an update with changed, added and deleted
//! files), `tar x` and `tar c`, `diff -r`, `find -newer`, `mktemp`,
//! `sed -i`, `git` (init, commit, clone, fsck), an editor's save (temp
//! file, fsync, rename), `sqlite3` with its default journal, `unzip`,
//! `python -m zipfile` and `dd conv=notrunc`.
//!
//! Each runs twice: on a server that answers like B2 (through the test
//! proxy: 501 to conditional PUTs, 400 to checksum headers, one request in
//! twenty throttled or its connection dropped after the server applied
//! it), with a disk cache, so that files it holds whole are read by FUSE
//! passthrough while the tools write others; and straight to the server
//! (which honours conditional PUTs), without one. What
//! the commands leave in the mount is compared with what the same commands
//! leave in a local directory: names, types (as `readdir` tells them, and
//! as `lstat` does), modes, mtimes where the tool keeps them, and bytes.
//! The trees are compared again after a remount, when nothing is left in
//! the mount's memory.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, new_bucket, server};

/// Run `script` under `bash -euo pipefail` with `vars` set; its stdout.
/// A failing command fails the test with its output.
fn sh(script: &str, vars: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg("-euo").arg("pipefail").arg("-c").arg(script);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", std::env::temp_dir())
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    let out = cmd.output().expect("run bash");
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a user sees of one path: type from readdir (d_type), type, mode
/// and size from lstat, mtime (when compared), and the bytes or the link
/// target.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    listed_type: &'static str,
    lstat_type: &'static str,
    perm: u32,
    mtime: Option<i64>,
    size: Option<u64>,
    content: Option<String>,
}

fn type_name(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

/// Every path below `root` (and `root` itself, as ".") as a user sees it.
fn walk(root: &Path, times: bool, skip: &[&str]) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let meta = std::fs::symlink_metadata(root).unwrap();
    out.insert(
        ".".to_owned(),
        Seen {
            listed_type: "dir",
            lstat_type: type_name(meta.file_type()),
            perm: meta.permissions().mode() & 0o7777,
            mtime: times.then(|| meta.mtime()),
            size: None,
            content: None,
        },
    );
    walk_into(root, root, times, skip, &mut out);
    out
}

fn walk_into(
    root: &Path,
    dir: &Path,
    times: bool,
    skip: &[&str],
    out: &mut BTreeMap<String, Seen>,
) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if skip
            .iter()
            .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let listed_type = type_name(entry.file_type().unwrap());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let lstat_type = type_name(meta.file_type());
        let (size, content) = match lstat_type {
            "file" => (
                Some(meta.len()),
                Some(support::sha256(&std::fs::read(&path).unwrap())),
            ),
            "symlink" => (
                Some(meta.len()),
                Some(
                    std::fs::read_link(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
            ),
            _ => (None, None),
        };
        out.insert(
            rel,
            Seen {
                listed_type,
                lstat_type,
                perm: meta.permissions().mode() & 0o7777,
                mtime: times.then(|| meta.mtime()),
                size,
                content,
            },
        );
        if lstat_type == "dir" {
            walk_into(root, &path, times, skip, out);
        }
    }
}

/// The trees hold the same names, types, modes, bytes (and mtimes).
fn assert_same_tree(local: &Path, mounted: &Path, times: bool, skip: &[&str], what: &str) {
    let want = walk(local, times, skip);
    let got = walk(mounted, times, skip);
    for (path, seen) in &want {
        assert_eq!(
            got.get(path),
            Some(seen),
            "{what}: {path} differs between {} and {}",
            local.display(),
            mounted.display()
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: names"
    );
}

/// The source tree: modes other than the defaults, a symlink, a
/// directory of mode 0750, and mtimes from 2017 to 2020.
const MAKE_SOURCE: &str = r#"
mkdir -p "$SRC/sub/deep" "$SRC/empty"
printf 'hello\nthere\n' > "$SRC/notes.txt"
printf 'secret' > "$SRC/private.txt"; chmod 0640 "$SRC/private.txt"
printf '#!/bin/sh\necho hi\n' > "$SRC/run.sh"; chmod 0755 "$SRC/run.sh"
ln -s notes.txt "$SRC/link"
ln -s sub/deep "$SRC/dirlink"
head -c 300000 /dev/urandom > "$SRC/sub/blob.bin"
printf 'deep' > "$SRC/sub/deep/d.txt"
: > "$SRC/sub/zero"
chmod 0750 "$SRC/sub"
touch -h -d '2017-03-04 05:06:07' "$SRC/notes.txt" "$SRC/link" "$SRC/sub/zero"
touch -h -d '2018-01-01 00:00:00' "$SRC/private.txt" "$SRC/dirlink" "$SRC/sub/blob.bin"
touch -h -d '2019-06-01 12:00:00' "$SRC/run.sh" "$SRC/sub/deep/d.txt"
touch -d '2020-02-02 02:02:02' "$SRC/sub/deep" "$SRC/sub" "$SRC/empty"
touch -d '2020-03-03 03:03:03' "$SRC"
"#;

/// Trees copied in with the tools that keep modes and times.
fn copy_trees_in(src: &Path, src2: &Path, work: &Path, mnt: &Path) {
    sh(
        r#"
cp -a "$SRC" "$MNT/cpa"
rsync -a "$SRC/" "$MNT/rs/"
tar cf "$WORK/src.tar" -C "$SRC" .
mkdir "$MNT/tx"
tar xf "$WORK/src.tar" -C "$MNT/tx"
# An update: a changed file, an added one, a deleted one.
cp -a "$SRC" "$SRC2"
printf 'hello\nagain\n' > "$SRC2/notes.txt"; touch -d '2021-01-01 00:00:00' "$SRC2/notes.txt"
printf 'new' > "$SRC2/sub/new.txt"; chmod 0600 "$SRC2/sub/new.txt"
rm "$SRC2/private.txt"
touch -d '2020-02-02 02:02:02' "$SRC2/sub"
touch -d '2020-03-03 03:03:03' "$SRC2"
rsync -a --delete "$SRC2/" "$MNT/rs/"
"#,
        &[("SRC", src), ("SRC2", src2), ("WORK", work), ("MNT", mnt)],
    );
}

/// What `ls -l`, `find -newer`, `diff -r` and `tar c` show of the copies.
fn check_copies(src: &Path, src2: &Path, mnt: &Path, when: &str) {
    assert_same_tree(src, &mnt.join("cpa"), true, &[], &format!("cp -a, {when}"));
    assert_same_tree(src, &mnt.join("tx"), true, &[], &format!("tar x, {when}"));
    assert_same_tree(
        src2,
        &mnt.join("rs"),
        true,
        &[],
        &format!("rsync -a update, {when}"),
    );
    let out = sh(
        r#"
LS_NORM='/^total/ {next} NF >= 9 {$2 = ""; if ($1 ~ /^d/) $5 = "-"} {print}'
for t in cpa tx; do
  diff -r --no-dereference "$SRC" "$MNT/$t"
  # ls -l as it is, but for what differs between any two filesystems: a
  # directory's size and link count.
  diff <(cd "$SRC" && ls -lR --time-style=full-iso . | awk "$LS_NORM") \
       <(cd "$MNT/$t" && ls -lR --time-style=full-iso . | awk "$LS_NORM")
  diff <(cd "$SRC" && find . -newer ./notes.txt | sort) <(cd "$MNT/$t" && find . -newer ./notes.txt | sort)
  diff <(tar cf - -C "$SRC" . | tar tvf - --numeric-owner | sort -k6) \
       <(tar cf - -C "$MNT/$t" . | tar tvf - --numeric-owner | sort -k6)
done
diff -r --no-dereference "$SRC2" "$MNT/rs"
echo ok
"#,
        &[("SRC", src), ("SRC2", src2), ("MNT", mnt)],
    );
    assert_eq!(out.trim(), "ok", "{when}");
}

/// Commands that make files the way programs do (mkstemp, rename over,
/// journals, archives, writes in place), run the same way in `dir`.
const EVERYDAY: &str = r#"
cd "$D"
printf 'hello world\n' > notes.txt
t=$(mktemp -p "$D" tmp.XXXXXX)
printf 'made by mktemp\n' > "$t"
mv "$t" mktemp.out
sed -i 's/hello/howdy/' notes.txt
# An editor's save: a temp file, fsync, rename over the original; every
# close checked (a failed close must fail the script).
python3 - <<'EOF'
import os
with open("doc.txt", "w") as f:
    f.write("first draft\n")
tmp = "doc.txt.swp"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"second draft\n")
os.fsync(fd)
os.close(fd)
os.replace(tmp, "doc.txt")
EOF
# Python's tempfile (mkstemp, O_EXCL) and a checked close.
python3 - <<'EOF'
import tempfile, os
fd, name = tempfile.mkstemp(dir=".", prefix="py", suffix=".tmp")
os.write(fd, b"tempfile\n")
os.close(fd)
os.rename(name, "tempfile.out")
EOF
# sqlite with its default (rollback journal) mode.
sqlite3 db.sqlite 'create table t(x integer primary key, v text);'
sqlite3 db.sqlite 'begin; insert into t(v) values ("a"),("b"),("c"); update t set v = "B" where x = 2; commit;'
sqlite3 db.sqlite 'select group_concat(v) from t;' > db.out
# Archives.
mkdir zsrc && printf 'one\n' > zsrc/1.txt && printf 'two\n' > zsrc/2.txt
# Archives hold their members' times: the same on both sides.
touch -d '2022-02-02 12:00:00' zsrc/1.txt zsrc/2.txt
(cd zsrc && zip -qX ../a.zip 1.txt 2.txt)
mkdir uz && unzip -q a.zip -d uz
python3 -m zipfile -c p.zip zsrc/1.txt zsrc/2.txt
python3 -m zipfile -e p.zip pz
# dd into the middle of a file, keeping the rest.
head -c 200000 /dev/zero | tr '\0' 'a' > dd.bin
printf 'XYZ' | dd of=dd.bin bs=1 seek=100000 conv=notrunc status=none
"#;

/// git: a repository made, committed to and cloned inside the mount.
const GIT: &str = r#"
cd "$D"
git init -q repo
cd repo
git config user.email t@example.org
git config user.name test
printf 'line\n' > a.txt
mkdir -p src && printf 'fn main() {}\n' > src/main.rs
chmod 0755 src/main.rs
git add -A
git commit -q -m first
printf 'line 2\n' >> a.txt
git commit -q -am second
git fsck --full --strict
cd ..
git clone -q repo clone
git -C clone fsck --full --strict
git -C clone log --format=%s
git -C clone status --porcelain
cat clone/a.txt
"#;

async fn run_everything(mnt: &Path, c: &bucketfs::s3::S3Client, endpoint: &str, extra: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let (src, src2, local) = (
        work.path().join("src"),
        work.path().join("src2"),
        work.path().join("local"),
    );
    let mnt = mnt.to_path_buf();
    let work_path = work.path().to_path_buf();
    {
        let (src, src2, local, mnt) = (src.clone(), src2.clone(), local.clone(), mnt.clone());
        blocking(move || {
            std::fs::create_dir(&local).unwrap();
            std::fs::create_dir(mnt.join("every")).unwrap();
            sh(MAKE_SOURCE, &[("SRC", &src)]);
            copy_trees_in(&src, &src2, &work_path, &mnt);
            check_copies(&src, &src2, &mnt, "at once");
            sh(EVERYDAY, &[("D", &local)]);
            sh(EVERYDAY, &[("D", &mnt.join("every"))]);
            // zipfile -e does not keep times: compare without them.
            assert_same_tree(&local, &mnt.join("every"), false, &[], "everyday tools");
            let git_dir = local.with_file_name("git");
            std::fs::create_dir(&git_dir).unwrap();
            let git_local = sh(GIT, &[("D", &git_dir)]);
            let git_mounted = sh(GIT, &[("D", &mnt)]);
            assert_eq!(git_mounted, git_local, "git's output");
            assert_eq!(
                git_mounted.lines().collect::<Vec<_>>(),
                ["second", "first", "line", "line 2"]
            );
            let db = std::fs::read_to_string(mnt.join("every/db.out")).unwrap();
            assert_eq!(db.trim(), "a,B,c");
        })
        .await;
    }
    // After a remount, nothing is left in the mount's memory.
    let mut again = Mount::start(c.bucket(), endpoint, extra);
    let mnt2 = again.path.clone();
    {
        let (src, src2, local) = (src.clone(), src2.clone(), local.clone());
        blocking(move || {
            check_copies(&src, &src2, &mnt2, "after a remount");
            assert_same_tree(
                &local,
                &mnt2.join("every"),
                false,
                &[],
                "everyday tools, remounted",
            );
            sh(
                r#"git -C "$D/clone" fsck --full --strict; git -C "$D/repo" fsck --full --strict"#,
                &[("D", &mnt2)],
            );
        })
        .await;
    }
    assert!(again.unmount().success());
    drop(work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_work_on_a_server_that_answers_like_b2() {
    let c = new_bucket("tools-b2").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.b2_like(20);
    let cache = tempfile::tempdir().expect("disk cache dir");
    let cache_dir = cache.path().to_string_lossy().into_owned();
    // --debug: the log shows each open made by passthrough.
    let extra = [
        "-o",
        "max_attempts=10",
        "--disk-cache",
        &cache_dir,
        "--debug",
    ];
    let mut mount = Mount::start(c.bucket(), &proxy.url, &extra);
    run_everything(&mount.path.clone(), &c, &proxy.url, &extra).await;
    assert!(mount.unmount().success());
    let log = mount.log_text();
    let by_passthrough = log.matches("open by FUSE passthrough").count();
    eprintln!("{by_passthrough} opens by FUSE passthrough");
    assert!(
        log.contains("(FUSE passthrough)") && by_passthrough > 0,
        "files the disk cache holds whole are read by passthrough"
    );
    assert!(
        log.contains("conditional PUTs are not available"),
        "the log says the mount checks O_EXCL itself:\n{log}"
    );
    let refused = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.header_names.iter().any(|h| h == "if-none-match"))
        .count();
    assert!(
        refused <= 1,
        "{refused} conditional PUTs after the first refusal"
    );
    let faults = proxy.faults_seen();
    eprintln!("the proxy throttled or cut {faults} requests");
    assert!(faults >= 10, "only {faults} faults injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_work_straight_to_the_server() {
    let c = new_bucket("tools-direct").await;
    let endpoint = server().endpoint.clone();
    let mut mount = Mount::start(c.bucket(), &endpoint, &[]);
    run_everything(&mount.path.clone(), &c, &endpoint, &[]).await;
    assert!(mount.unmount().success());
}

/// `O_EXCL` stays exclusive against another client, whether the server
/// honours conditional PUTs or refuses them as B2 does (then the mount's
/// own HEAD before the upload finds the other object): the close fails
/// with `EEXIST`, and the other client's object is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_create_loses_to_an_object_made_meanwhile_with_or_without_conditional_puts() {
    use std::io::Write;
    for refuse in [true, false] {
        let c = new_bucket("excl-race").await;
        let proxy = FaultProxy::start(&server().endpoint).await;
        proxy.refuse_conditional_put(refuse);
        let mount = Mount::start(c.bucket(), &proxy.url, &[]);
        let path = mount.path.join("lock");
        let mut f = blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        })
        .await
        .expect("O_EXCL create of a new name");
        support::put(&c, "lock", b"someone else's").await;
        let closed = blocking(move || {
            f.write_all(b"mine")?;
            support::close_checked(f)
        })
        .await;
        let err = closed.expect_err("the close must fail: the name was taken meanwhile");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EEXIST),
            "refused={refuse}: {err}"
        );
        let (_, body) = c
            .get_object_bytes("lock", Default::default())
            .await
            .unwrap();
        assert_eq!(&body[..], b"someone else's", "refused={refuse}");
        let log = mount.log_text();
        assert_eq!(
            log.contains("conditional PUTs are not available"),
            refuse,
            "the log says which way O_EXCL is kept:\n{log}"
        );
    }
}
