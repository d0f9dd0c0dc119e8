#!/usr/bin/env python3
"""The disk cache (`--disk-cache`): what a remount saves.

Run by `bench/run.sh cache` inside its network namespace: a fresh Garage
on tmpfs, a 1 GiB object and a 1 GiB object for random reads, and
bucketfs mounted again and again with one disk cache on the real disk
(under /var/tmp). Rows, after `drop_caches` unless marked warm:

- a cold sequential read of 1 GiB without the disk cache;
- the same with it (the read that fills it);
- a re-read after a remount, from the disk cache: by FUSE passthrough
  (the file is whole in the cache), then with `--no-passthrough` (through
  the daemon); each read again at once (warm: the page cache holds it);
- `dd` of the cache's own data file: the local-disk ceiling (this VM's
  disk swings between runs, so `dd` through the mount, by passthrough, is
  also timed against `dd` of the cache's file in pairs, one read right
  after the other);
- 2,000 random 4 KiB reads (fio, same seed), first with the disk cache
  empty, then again after a remount (a file cached in part: through the
  daemon);
- 2,000 random 4 KiB reads of the file the cache holds whole, warm, by
  passthrough and through the daemon.

Each row gives the time, MiB/s, the ratio to the cold read and the GETs
bucketfs sent (counted in its debug log). Saved under bench/results/.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402
    GiB,
    MiB,
    REPO,
    Garage,
    Tool,
    drop_caches,
    log,
    make_source,
    read_file,
    run,
)


def gets_in(log_path, since):
    """GetObject requests logged after byte `since` of the log."""
    with open(log_path, errors="replace") as f:
        f.seek(since)
        return sum(1 for line in f if 'op="GetObject"' in line and "request ok" in line)


def log_size(tool):
    tool.log.flush()
    return os.path.getsize(tool.log.name)


def timed_read(tool, name):
    since = log_size(tool)
    start = time.monotonic()
    assert read_file(os.path.join(tool.mnt, name)) == GiB
    took = time.monotonic() - start
    return took, gets_in(tool.log.name, since)


def fio(tool, reads, name="rand.bin"):
    since = log_size(tool)
    out = run(["fio", "--name=rand", f"--filename={os.path.join(tool.mnt, name)}",
               "--readonly", "--rw=randread", "--bs=4k", "--size=1g",
               f"--io_size={reads * 4}k", "--ioengine=psync", "--fadvise_hint=1",
               "--randrepeat=1", "--runtime=120", "--output-format=json"]).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]["read"]
    return job["runtime"] / 1000, gets_in(tool.log.name, since), job["iops"]


def one_run(g, work, cache_dir, reads, run_index):
    r = {}
    plain = Tool("bucketfs", g, work)
    cached = Tool("bucketfs", g, work, extra=["--disk-cache", cache_dir])
    shutil.rmtree(cache_dir, ignore_errors=True)

    drop_caches()
    plain.mount()
    try:
        r["cold_s"], r["cold_gets"] = timed_read(plain, "big.bin")
    finally:
        plain.unmount()

    drop_caches()
    cached.mount()
    try:
        r["fill_s"], r["fill_gets"] = timed_read(cached, "big.bin")
        r["rand1_s"], r["rand1_gets"], r["rand1_iops"] = fio(cached, reads)
    finally:
        cached.unmount()

    def passthrough():
        drop_caches()
        cached.mount()
        try:
            r["reread_s"], r["reread_gets"] = timed_read(cached, "big.bin")
            r["warm_s"], _ = timed_read(cached, "big.bin")
            r["rand2_s"], r["rand2_gets"], r["rand2_iops"] = fio(cached, reads)
            r["whole_s"], r["whole_gets"], r["whole_iops"] = fio(cached, reads, "big.bin")
            # This disk's speed swings between runs: `dd` through the mount
            # (passthrough) against `dd` of the cache's file, in pairs read
            # one right after the other, the same program on both sides.
            pairs = []
            for i in range(4):
                times = {}
                for what in (["dd", "pt"] if i % 2 == 0 else ["pt", "dd"]):
                    drop_caches()
                    if what == "dd":
                        times["dd"] = dd_time(cache_file())
                    else:
                        times["pt"] = dd_time(os.path.join(cached.mnt, "big.bin"))
                pairs.append(times)
            r["pairs"] = pairs
            r["paired_ratio"] = statistics.median(p["dd"] / p["pt"] for p in pairs)
        finally:
            cached.unmount()

    def through_daemon():
        drop_caches()
        daemon = Tool("bucketfs", g, work,
                      extra=["--disk-cache", cache_dir, "--no-passthrough"])
        daemon.mount()
        try:
            r["reread_np_s"], r["reread_np_gets"] = timed_read(daemon, "big.bin")
            r["warm_np_s"], _ = timed_read(daemon, "big.bin")
            r["whole_np_s"], _, r["whole_np_iops"] = fio(daemon, reads, "big.bin")
        finally:
            daemon.unmount()

    def cache_file():
        # The cache's own file of big.bin: the one with the most bytes on
        # disk (rand.bin's is as long, but sparse: mostly holes).
        files = [os.path.join(root, f) for root, _, fs in os.walk(cache_dir)
                 for f in fs if f.endswith(".data")]
        return max(files, key=lambda p: os.stat(p).st_blocks)

    def dd_time(path):
        start = time.monotonic()
        run(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
        return time.monotonic() - start

    def local_disk():
        # The local-disk ceiling: the cache's own file of big.bin, by dd.
        drop_caches()
        r["dd_s"] = dd_time(cache_file())

    # The virtual disk reads faster the more often a file was read lately:
    # each run takes the three in another order.
    steps = [passthrough, through_daemon, local_disk]
    for step in steps[run_index % 3:] + steps[:run_index % 3]:
        step()
    r["cache_bytes"] = sum(
        os.stat(os.path.join(root, f)).st_blocks * 512
        for root, _, files in os.walk(cache_dir) for f in files
    )
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--random-reads", type=int, default=2000)
    args = ap.parse_args()
    # GETs are counted in bucketfs's debug log.
    os.environ["BUCKETFS_LOG"] = "debug"

    shm = tempfile.mkdtemp(prefix="bucketfs-bench-", dir="/dev/shm")
    work = tempfile.mkdtemp(prefix="bucketfs-bench-work-")
    cache_dir = tempfile.mkdtemp(prefix="bucketfs-bench-disk-cache-", dir="/var/tmp")
    os.chmod(cache_dir, 0o700)
    source = os.path.join(shm, "source.bin")
    results = []
    try:
        make_source(source, GiB)
        for n in range(args.runs):
            g = Garage(os.path.join(shm, f"garage-{n}"))
            log(f"run {n + 1}/{args.runs}: starting Garage, uploading 2 GiB")
            g.start()
            try:
                s3 = g.client()
                from boto3.s3.transfer import TransferConfig

                cfg = TransferConfig(multipart_chunksize=8 * MiB, max_concurrency=8)
                for key in ("big.bin", "rand.bin"):
                    s3.upload_file(source, "bench", key, Config=cfg)
                results.append(one_run(g, work, os.path.join(cache_dir, "c"), args.random_reads, n))
                log(json.dumps(results[-1]))
            finally:
                g.stop()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)

    med = {k: statistics.median(r[k] for r in results) for k in results[0] if k != "pairs"}
    mibs = lambda s: GiB / MiB / s  # noqa: E731
    rows = [
        ("cold read of 1 GiB, no disk cache", med["cold_s"], mibs(med["cold_s"]), 1.0,
         med["cold_gets"]),
        ("first read with the disk cache (fills it)", med["fill_s"], mibs(med["fill_s"]),
         med["cold_s"] / med["fill_s"], med["fill_gets"]),
        ("re-read after a remount, passthrough", med["reread_s"], mibs(med["reread_s"]),
         med["cold_s"] / med["reread_s"], med["reread_gets"]),
        ("the same again, warm", med["warm_s"], mibs(med["warm_s"]),
         med["cold_s"] / med["warm_s"], 0),
        ("re-read after a remount, `--no-passthrough`", med["reread_np_s"],
         mibs(med["reread_np_s"]), med["cold_s"] / med["reread_np_s"], med["reread_np_gets"]),
        ("the same again, warm", med["warm_np_s"], mibs(med["warm_np_s"]),
         med["cold_s"] / med["warm_np_s"], 0),
        ("`dd` of the cache's data file (local disk)", med["dd_s"], mibs(med["dd_s"]),
         med["cold_s"] / med["dd_s"], 0),
        (f"{args.random_reads} random 4 KiB reads, cache empty", med["rand1_s"], None,
         1.0, med["rand1_gets"]),
        (f"{args.random_reads} random 4 KiB reads after a remount", med["rand2_s"], None,
         med["rand1_s"] / med["rand2_s"], med["rand2_gets"]),
        (f"{args.random_reads} random 4 KiB reads of a whole file, warm, passthrough",
         med["whole_s"], None, med["rand1_s"] / med["whole_s"], med["whole_gets"]),
        (f"{args.random_reads} random 4 KiB reads of a whole file, warm, `--no-passthrough`",
         med["whole_np_s"], None, med["rand1_s"] / med["whole_np_s"], 0),
    ]
    lines = [
        f"bucketfs disk cache, {datetime.date.today()}, {platform.node()}, "
        f"{len(results)} runs, medians; Garage on tmpfs, the cache on /var/tmp",
        "",
        "| | time s | MiB/s | speed-up over the cold read | GETs |",
        "|---|---|---|---|---|",
    ]
    for name, s, rate, ratio, gets in rows:
        rate_s = f"{rate:.0f}" if rate else "-"
        lines.append(f"| {name} | {s:.2f} | {rate_s} | {ratio:.1f}x | {gets:.0f} |")
    lines.append("")
    lines.append(
        f"Re-read after a remount: {med['dd_s'] / med['reread_s']:.2f}x of `dd` on the same "
        f"disk by passthrough, {med['dd_s'] / med['reread_np_s']:.2f}x through the daemon "
        f"(`dd` through the mount by passthrough against `dd` of the cache's file, in pairs "
        f"one right after the other: {med['paired_ratio']:.2f}x); "
        f"random reads {med['rand2_iops']:.0f} IOPS from the cache against "
        f"{med['rand1_iops']:.0f} cold, and of a whole file {med['whole_iops']:.0f} IOPS by "
        f"passthrough against {med['whole_np_iops']:.0f} through the daemon. "
        f"Disk used: {med['cache_bytes'] / MiB:.0f} MiB."
    )
    text = "\n".join(lines)
    print(text)
    out = os.path.join(REPO, "bench", "results",
                       f"{datetime.date.today()}-{platform.node()}-disk-cache.md")
    with open(out, "w") as f:
        f.write(text + "\n\nRaw runs:\n\n```\n" + json.dumps(results, indent=1) + "\n```\n")
    log(f"saved {out}")


if __name__ == "__main__":
    main()
