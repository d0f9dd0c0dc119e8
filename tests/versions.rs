//! The `.versions` view through a real mount of a versioned bucket: each
//! file's history as a directory, deleted files included, point-in-time
//! views, restore by cp, and nothing under it writable.

mod support;

use std::time::{Duration, SystemTime};

use bucketfs::s3::{PutOptions, VersionKind};
use bytes::Bytes;
use support::mount::Mount;
use support::{blocking, names, new_versioned_bucket, put, server, versioning_enabled};

fn instant(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_point_in_time_and_restore() {
    let c = new_versioned_bucket("history").await;
    if !versioning_enabled(&c).await {
        return;
    }
    put(&c, "dir/old.txt", b"old").await;
    c.delete_object("dir/old.txt", None).await.unwrap();
    put(&c, "odd name ü.txt", b"odd").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=0"]);
    let root = mount.path.clone();
    blocking({
        let root = root.clone();
        move || {
            for body in ["one", "two", "three"] {
                std::fs::write(root.join("doc.txt"), body).unwrap();
                // Some servers (moto) keep whole seconds: keep the writes
                // in different seconds so the instants between them exist.
                std::thread::sleep(Duration::from_millis(1100));
            }
        }
    })
    .await;
    let history = c.list_all_versions("doc.txt").await.unwrap();
    assert_eq!(history.len(), 3);
    // Instants between the writes, from the server's own times.
    let times: Vec<SystemTime> = history.iter().rev().map(|v| v.last_modified).collect();
    let between = |a: SystemTime, b: SystemTime| a + (b.duration_since(a).unwrap() / 2);
    let after_one = instant(between(times[0], times[1]));
    let after_three = instant(times[2] + Duration::from_millis(1));

    let (deleted_at, restored) = blocking(move || {
        let v = root.join(".versions");
        // Hidden from the root listing, reachable by name.
        assert!(
            !names(&root).contains(&".versions".to_owned()),
            "{:?}",
            names(&root)
        );
        assert!(std::fs::metadata(&v).unwrap().is_dir());
        assert!(names(&v).contains(&"doc.txt".to_owned()));
        assert!(
            names(&v).contains(&"dir".to_owned()),
            "deleted directories stay in history"
        );
        assert_eq!(names(&v.join("dir")), ["old.txt"]);
        let odd = names(&v.join("odd name ü.txt"));
        assert_eq!(
            std::fs::read_to_string(v.join("odd name ü.txt").join(&odd[0])).unwrap(),
            "odd"
        );

        let entries = names(&v.join("doc.txt"));
        assert_eq!(entries.len(), 3, "{entries:?}");
        let contents: Vec<String> = entries
            .iter()
            .map(|e| std::fs::read_to_string(v.join("doc.txt").join(e)).unwrap())
            .collect();
        assert_eq!(contents, ["one", "two", "three"], "oldest to newest");
        let meta = std::fs::metadata(v.join("doc.txt").join(&entries[1])).unwrap();
        assert_eq!(meta.len(), 3);

        // Delete, and the history stays, with a delete marker entry.
        std::fs::remove_file(root.join("doc.txt")).unwrap();
        let entries_after = names(&v.join("doc.txt"));
        assert_eq!(entries_after.len(), 4);
        let marker = entries_after.last().unwrap().clone();
        assert!(marker.ends_with("~deleted"), "{marker}");
        assert_eq!(
            std::fs::metadata(v.join("doc.txt").join(&marker))
                .unwrap()
                .len(),
            0
        );

        // Point in time: before the delete, between the first two writes.
        let at = v.join(format!("@{after_one}"));
        assert_eq!(std::fs::read_to_string(at.join("doc.txt")).unwrap(), "one");
        let at3 = v.join(format!("@{after_three}"));
        assert_eq!(
            std::fs::read_to_string(at3.join("doc.txt")).unwrap(),
            "three"
        );
        assert!(names(&at3).contains(&"doc.txt".to_owned()));
        assert!(
            !names(&at3.join("dir")).contains(&"old.txt".to_owned()),
            "deleted before then"
        );
        // After the delete, the file is not in the view of that moment.
        let now = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(1))
            .to_string();
        assert!(!names(&v.join(format!("@{now}"))).contains(&"doc.txt".to_owned()));
        let err = std::fs::metadata(v.join("@not-a-time")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));

        // Everything under .versions is read-only.
        for err in [
            std::fs::write(v.join("new.txt"), b"x").unwrap_err(),
            std::fs::write(v.join("doc.txt").join(&entries[0]), b"x").unwrap_err(),
            std::fs::remove_file(v.join("doc.txt").join(&entries[0])).unwrap_err(),
            std::fs::create_dir(v.join("newdir")).unwrap_err(),
            std::fs::set_permissions(
                v.join("doc.txt").join(&entries[0]),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap_err(),
            std::fs::rename(v.join("doc.txt").join(&entries[0]), root.join("x")).unwrap_err(),
        ] {
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        }

        // Restore by cp through the normal write path.
        let status = std::process::Command::new("cp")
            .arg(v.join("doc.txt").join(&entries[1]))
            .arg(root.join("doc.txt"))
            .status()
            .unwrap();
        assert!(status.success());
        (
            marker,
            std::fs::read_to_string(root.join("doc.txt")).unwrap(),
        )
    })
    .await;
    assert_eq!(restored, "two");
    assert!(deleted_at.contains('~'));
    let (_, body) = c
        .get_object_bytes("doc.txt", Default::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_more_than_a_thousand_versions_lists_them_all() {
    let c = new_versioned_bucket("manyversions").await;
    if !versioning_enabled(&c).await {
        return;
    }
    for i in 0..1005 {
        c.put_object(
            "busy.log",
            Bytes::from(format!("{i}")),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let versions = c.list_all_versions("busy.log").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .filter(|v| matches!(v.kind, VersionKind::Object { .. }))
            .count(),
        1005
    );
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "versions=visible"]);
    let root = mount.path.clone();
    blocking(move || {
        assert!(
            names(&root).contains(&".versions".to_owned()),
            "visible mode lists it"
        );
        let entries = names(&root.join(".versions/busy.log"));
        assert_eq!(entries.len(), 1005);
        let newest = root
            .join(".versions/busy.log")
            .join(entries.last().unwrap());
        assert_eq!(std::fs::read_to_string(newest).unwrap(), "1004");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_versions_key_is_shadowed_unless_the_view_is_off() {
    let c = new_versioned_bucket("shadow").await;
    put(&c, ".versions/real.txt", b"real").await;
    put(&c, "plain.txt", b"p").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(names(&root), ["plain.txt"]);
        // Its history is in the view, one level down like any key's.
        assert!(std::fs::metadata(root.join(".versions/.versions/real.txt"))
            .unwrap()
            .is_dir());
    })
    .await;
    assert!(mount.log_text().contains("taken by the versions view"));
    drop(mount);
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "versions=off"]);
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(
            std::fs::read_to_string(root.join(".versions/real.txt")).unwrap(),
            "real"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_bucket_shows_the_current_version_only() {
    let c = support::new_bucket("unversioned").await;
    put(&c, "f.txt", b"first").await;
    put(&c, "f.txt", b"second").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        let entries = names(&root.join(".versions/f.txt"));
        assert_eq!(entries.len(), 1, "{entries:?}");
        let body = std::fs::read_to_string(root.join(".versions/f.txt").join(&entries[0])).unwrap();
        assert_eq!(body, "second");
    })
    .await;
}
