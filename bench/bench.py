#!/usr/bin/env python3
"""bucketfs side by side with the raw S3 server and the peer tools.

Run by bench/run.sh inside a private network namespace (loopback with
quickack): starts a fresh Garage on tmpfs for each run, uploads the
fixtures through the S3 API, measures the raw server (curl and plain HTTP
with presigned URLs) and each mount tool found, and prints one table of
medians, with bucketfs's ratios to the raw server and to the best peer.
The table and the raw numbers are saved under bench/results/.

Every number of a run comes from the same machine and the same server
state; absolute numbers move 20% or more between runs on these machines,
so compare within a table only.
"""
import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import boto3
from botocore.config import Config

MiB = 1 << 20
GiB = 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDPOINT = "http://127.0.0.1:3900"
REGION = "garage"
BUCKET = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- server


class Garage:
    """A single-node Garage with its data on tmpfs, one bucket, one key."""

    def __init__(self, root):
        self.root = root
        self.conf = os.path.join(root, "garage.toml")
        self.proc = None

    def garage(self, *args):
        return run(["garage", "-c", self.conf, *args]).stdout

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(
                f"""metadata_dir = "{self.root}/meta"
data_dir = "{self.root}/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"
"""
            )
        self.log = open(os.path.join(self.root, "garage.log"), "w")
        self.proc = subprocess.Popen(
            ["garage", "-c", self.conf, "server"], stdout=self.log, stderr=self.log
        )
        node = None
        for _ in range(300):
            try:
                status = self.garage("status")
                m = re.search(r"^([0-9a-f]{16})\s", status, re.M)
                if m:
                    node = m.group(1)
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.1)
        if node is None:
            raise RuntimeError("Garage did not start; see " + self.root)
        self.garage("layout", "assign", "-z", "dc1", "-c", "20G", node)
        self.garage("layout", "apply", "--version", "1")
        out = self.garage("key", "create", "bench-key")
        self.key_id = re.search(r"Key ID:\s*(\S+)", out).group(1)
        self.secret = re.search(r"Secret key:\s*(\S+)", out).group(1)
        self.garage("bucket", "create", BUCKET)
        self.garage("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "bench-key")
        # The first requests after a layout change can be refused briefly.
        for _ in range(100):
            try:
                self.client().head_bucket(Bucket=BUCKET)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("the bucket did not become usable")

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=ENDPOINT,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=64),
        )

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# -------------------------------------------------------------- fixtures


def make_source(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        for _ in range(size // (64 * MiB)):
            f.write(os.urandom(64 * MiB))


def upload_fixtures(s3, source, args):
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(multipart_chunksize=8 * MiB, max_concurrency=8)
    for key in ("big.bin", "rand.bin"):
        s3.upload_file(source, BUCKET, key, Config=cfg)
    body = b"x" * 100

    def put(key):
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    keys = [f"many/f{i:05d}" for i in range(args.many)] + [f"stat/f{i:04d}" for i in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put, keys))


# ------------------------------------------------------------ the raw server


def presign(s3, method, key, **params):
    return s3.generate_presigned_url(
        method, Params={"Bucket": BUCKET, "Key": key, **params}, ExpiresIn=3600
    )


def curl(*args):
    out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{time_starttransfer}", *args]).stdout
    total, first = out.split()
    return float(total), float(first)


def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":")[1].split()[0])
    return 0


def measure_raw(s3, source, args):
    r = {}
    url = presign(s3, "get_object", "big.bin")
    total, _ = curl(url)
    r["read_mibs"] = GiB / MiB / total
    # Parallel ranged GETs of 128 MiB: what a reader could get at best.
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-o", "/dev/null", "-r", f"{i * 128 * MiB}-{(i + 1) * 128 * MiB - 1}", url]
        )
        for i in range(8)
    ]
    for p in procs:
        p.wait()
    r["read_parallel_mibs"] = GiB / MiB / (time.monotonic() - start)
    start = time.monotonic()
    run(["curl", "-sS", "-o", "/dev/null", "-r", "0-4095", presign(s3, "get_object", "rand.bin")])
    r["ttfb_ms"] = (time.monotonic() - start) * 1000
    total, _ = curl("-T", source, presign(s3, "put_object", "raw-put.bin"))
    r["write_mibs"] = GiB / MiB / total
    s3.delete_object(Bucket=BUCKET, Key="raw-put.bin")

    # Random 4 KiB ranged GETs over one kept-alive connection.
    rng = random.Random(1)
    host = urllib.parse.urlparse(ENDPOINT)
    conn = http.client.HTTPConnection(host.hostname, host.port)
    rand_url = urllib.parse.urlparse(presign(s3, "get_object", "rand.bin"))
    path = rand_url.path + "?" + rand_url.query
    lat = []
    before = lo_bytes()
    start = time.monotonic()
    for _ in range(args.random_reads):
        off = rng.randrange(0, GiB // 4096) * 4096
        t = time.monotonic()
        conn.request("GET", path, headers={"Range": f"bytes={off}-{off + 4095}"})
        resp = conn.getresponse()
        resp.read()
        lat.append(time.monotonic() - t)
    elapsed = time.monotonic() - start
    r["rand_iops"] = args.random_reads / elapsed
    r["rand_p99_ms"] = sorted(lat)[int(len(lat) * 0.99)] * 1000
    r["rand_mib_moved"] = (lo_bytes() - before) / MiB

    # Listing, HEAD and PUT over one kept-alive connection with URLs
    # presigned beforehand: the server's cost, not a client library's.
    start = time.monotonic()
    token, n = None, 0
    while True:
        params = {"Prefix": "many/", "Delimiter": "/"}
        if token:
            params["ContinuationToken"] = token
        url = urllib.parse.urlparse(
            s3.generate_presigned_url("list_objects_v2", Params={"Bucket": BUCKET, **params})
        )
        conn.request("GET", url.path + "?" + url.query)
        body = conn.getresponse().read().decode()
        n += body.count("<Key>")
        m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
        if not m:
            break
        token = m.group(1)
    assert n == args.many, n
    r["ls_s"] = time.monotonic() - start

    def timed(method, keys, body=None):
        urls = [urllib.parse.urlparse(presign(s3, method, k)) for k in keys]
        verb = {"head_object": "HEAD", "put_object": "PUT"}[method]
        start = time.monotonic()
        for u in urls:
            conn.request(verb, u.path + "?" + u.query, body=body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        return len(urls) / (time.monotonic() - start)

    r["stat_ops"] = timed("head_object", [f"stat/f{i:04d}" for i in range(1000)])
    r["create_files_s"] = timed("put_object", [f"rawsmall/f{i:04d}" for i in range(1000)], b"s" * 4096)
    conn.close()
    return r


# ------------------------------------------------------------------ mounts


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Tool:
    """One FUSE mount tool, run in the foreground as our child."""

    def __init__(self, name, garage, work, endpoint=ENDPOINT, strict=False, extra=()):
        self.name = name
        self.g = garage
        self.work = work
        # Where the tool sends its requests (bill.py puts a counting proxy
        # there), whether to run it with no metadata caching at all, and
        # options of a variant (bucketfs with --price-list b2, ...).
        self.endpoint = endpoint
        self.strict = strict
        self.extra = list(extra)

    def command(self, mnt):
        g = self.g
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        env.update(AWS_ACCESS_KEY_ID=g.key_id, AWS_SECRET_ACCESS_KEY=g.secret)
        endpoint = self.endpoint
        if self.name == "bucketfs":
            cmd = [os.environ["BUCKETFS_BIN"], BUCKET, mnt, "-f", "--endpoint", endpoint,
                   "--region", REGION, "--cache-dir", os.path.join(self.work, "bucketfs-cache")]
            if self.strict:
                cmd += ["-o", "metadata_ttl=0,negative_ttl=0"]
        elif self.name == "s3fs":
            pw = os.path.join(self.work, "s3fs-passwd")
            with open(pw, "w") as f:
                f.write(f"{g.key_id}:{g.secret}\n")
            os.chmod(pw, 0o600)
            cmd = ["s3fs", BUCKET, mnt, "-f", "-o", f"url={endpoint}", "-o", "use_path_request_style",
                   "-o", f"endpoint={REGION}", "-o", f"passwd_file={pw}"]
            if self.strict:
                cmd += ["-o", "stat_cache_expire=0", "-o", "max_stat_cache_size=0"]
        elif self.name == "rclone":
            env.update(RCLONE_S3_PROVIDER="Other", RCLONE_S3_ENDPOINT=endpoint,
                       RCLONE_S3_ACCESS_KEY_ID=g.key_id, RCLONE_S3_SECRET_ACCESS_KEY=g.secret,
                       RCLONE_S3_REGION=REGION, RCLONE_S3_FORCE_PATH_STYLE="true")
            cmd = ["rclone", "mount", f":s3:{BUCKET}", mnt, "--vfs-cache-mode", "writes",
                   "--cache-dir", os.path.join(self.work, "rclone-cache")]
            if self.strict:
                cmd += ["--dir-cache-time", "0s", "--attr-timeout", "0s"]
        elif self.name == "mountpoint-s3":
            cmd = [os.environ["MOUNT_S3_BIN"], BUCKET, mnt, "--endpoint-url", endpoint, "--region",
                   REGION, "--force-path-style", "--allow-delete", "--allow-overwrite"]
            if self.strict:
                cmd += ["--metadata-ttl", "minimal"]
        else:
            raise ValueError(self.name)
        return cmd + self.extra, env

    def mount(self):
        self.mnt = tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.work)
        cmd, env = self.command(self.mnt)
        self.log = open(os.path.join(self.work, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        for _ in range(600):
            if is_mounted(self.mnt):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not mount")

    def unmount(self):
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt])
        os.rmdir(self.mnt)

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_file(path, chunk=MiB):
    fd = os.open(path, os.O_RDONLY)
    n = 0
    try:
        while True:
            b = os.read(fd, chunk)
            if not b:
                return n
            n += len(b)
    finally:
        os.close(fd)


def wait_in_bucket(s3, key, size, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{key} did not reach the bucket")


def count_in_bucket(s3, prefix):
    paginator = s3.get_paginator("list_objects_v2")
    return sum(len(p.get("Contents", [])) for p in paginator.paginate(Bucket=BUCKET, Prefix=prefix))


def measure_tool(tool, s3, source, args):
    r = {}
    # Session 1: cold first byte, cold sequential read, warm re-read,
    # random reads on an object not read before.
    drop_caches()
    tool.mount()
    try:
        big = os.path.join(tool.mnt, "big.bin")
        start = time.monotonic()
        fd = os.open(big, os.O_RDONLY)
        os.read(fd, 4096)
        r["ttfb_ms"] = (time.monotonic() - start) * 1000
        os.close(fd)
        cpu = tool.cpu_s()
        start = time.monotonic()
        assert read_file(big) == GiB
        r["read_mibs"] = GiB / MiB / (time.monotonic() - start)
        r["read_cpu_s_per_gib"] = tool.cpu_s() - cpu
        r["peak_rss_mib"] = tool.peak_rss_mib()
        start = time.monotonic()
        read_file(big)
        r["reread_mibs"] = GiB / MiB / (time.monotonic() - start)
        before = lo_bytes()
        out = run(["fio", "--name=rand", f"--filename={os.path.join(tool.mnt, 'rand.bin')}",
                   "--readonly", "--rw=randread", "--bs=4k", "--size=1g",
                   f"--io_size={args.random_reads * 4}k", "--ioengine=psync", "--fadvise_hint=1",
                   "--randrepeat=1", "--runtime=120", "--output-format=json"]).stdout
        job = json.loads(out[out.index("{"):])["jobs"][0]["read"]
        r["rand_iops"] = job["iops"]
        r["rand_p99_ms"] = job["clat_ns"]["percentile"]["99.000000"] / 1e6
        r["rand_mib_moved"] = (lo_bytes() - before) / MiB
    finally:
        tool.unmount()

    # Session 2: listing and stat, cold.
    drop_caches()
    tool.mount()
    try:
        start = time.monotonic()
        out = run(["ls", "-l", os.path.join(tool.mnt, "many")]).stdout
        r["ls_s"] = time.monotonic() - start
        assert out.count("\n") >= args.many, f"{tool.name} ls -l showed {out.count(chr(10))} lines"
        start = time.monotonic()
        for i in range(1000):
            os.stat(os.path.join(tool.mnt, "stat", f"f{i:04d}"))
        r["stat_ops"] = 1000 / (time.monotonic() - start)
        start = time.monotonic()
        run(["find", os.path.join(tool.mnt, "many")])
        r["find_s"] = time.monotonic() - start
    finally:
        tool.unmount()

    # Session 3: writes, counted until the bucket has them.
    drop_caches()
    tool.mount()
    key = f"written-{tool.name}.bin"
    try:
        cpu = tool.cpu_s()
        start = time.monotonic()
        run(["dd", f"if={source}", f"of={os.path.join(tool.mnt, key)}", "bs=1M"])
        wait_in_bucket(s3, key, GiB)
        r["write_mibs"] = GiB / MiB / (time.monotonic() - start)
        r["write_cpu_s_per_gib"] = tool.cpu_s() - cpu
        small = os.path.join(tool.mnt, f"small-{tool.name}")
        os.mkdir(small)
        body = b"s" * 4096
        start = time.monotonic()
        for i in range(1000):
            with open(os.path.join(small, f"f{i:04d}"), "wb") as f:
                f.write(body)
        deadline = time.monotonic() + 300
        while count_in_bucket(s3, f"small-{tool.name}/") < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        r["create_files_s"] = 1000 / (time.monotonic() - start)
    finally:
        tool.unmount()
    s3.delete_object(Bucket=BUCKET, Key=key)
    return r


# ------------------------------------------------------------------ report

ROWS = [
    ("read_mibs", "seq read 1 GiB cold, MiB/s", True),
    ("read_parallel_mibs", "  raw: 8 parallel ranged GETs, MiB/s", True),
    ("ttfb_ms", "time to first 4 KiB cold, ms", False),
    ("reread_mibs", "re-read 1 GiB warm, MiB/s", True),
    ("write_mibs", "seq write 1 GiB until in the bucket, MiB/s", True),
    ("rand_iops", "random 4 KiB reads, unread object, IOPS", True),
    ("rand_p99_ms", "  p99 latency, ms", False),
    ("rand_mib_moved", "  MiB moved on loopback for 7.8 MiB read", False),
    ("ls_s", "ls -l of 10,000 objects cold, s", False),
    ("find_s", "find of 10,000 objects (after ls), s", False),
    ("stat_ops", "stat 1,000 files cold, ops/s", True),
    ("create_files_s", "1,000 files of 4 KiB until in the bucket, files/s", True),
    ("peak_rss_mib", "daemon peak RSS during the 1 GiB read, MiB", False),
    ("read_cpu_s_per_gib", "daemon CPU s per GiB read", False),
    ("write_cpu_s_per_gib", "daemon CPU s per GiB written", False),
]


def fmt(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(medians, columns):
    head = ["metric"] + columns + ["bucketfs / raw", "bucketfs / best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, higher in ROWS:
        vals = {c: medians.get(c, {}).get(key) for c in columns}
        if all(v is None for v in vals.values()):
            continue
        cells = [label] + [fmt(vals[c]) for c in columns]
        ours = vals.get("bucketfs")
        raw = vals.get("raw")
        peers = [v for c, v in vals.items() if c not in ("raw", "bucketfs") and v is not None]
        ratio_raw = f"{ours / raw:.2f}×" if ours and raw else "–"
        best = (max(peers) if higher else min(peers)) if peers else None
        ratio_peer = f"{ours / best:.2f}×" if ours and best else "–"
        lines.append("| " + " | ".join(cells + [ratio_raw, ratio_peer]) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="bucketfs,s3fs,rclone,mountpoint-s3")
    ap.add_argument("--quick", action="store_true", help="1 run, 2,000 objects: a smoke test")
    args = ap.parse_args()
    args.many = 2000 if args.quick else 10000
    args.random_reads = 2000
    if args.quick:
        args.runs = 1

    tools = []
    for name in args.tools.split(","):
        binary = {"bucketfs": os.environ.get("BUCKETFS_BIN", ""), "s3fs": shutil.which("s3fs"),
                  "rclone": shutil.which("rclone"),
                  "mountpoint-s3": os.environ.get("MOUNT_S3_BIN", "")}.get(name)
        if binary and os.path.exists(binary):
            tools.append(name)
        else:
            log(f"{name} not found: its column is left out")

    shm = tempfile.mkdtemp(prefix="bucketfs-bench-", dir="/dev/shm")
    work = tempfile.mkdtemp(prefix="bucketfs-bench-work-")
    source = os.path.join(shm, "source.bin")
    results = {c: [] for c in ["raw"] + tools}
    try:
        make_source(source, GiB)
        for n in range(args.runs):
            g = Garage(os.path.join(shm, f"garage-{n}"))
            log(f"run {n + 1}/{args.runs}: starting Garage, uploading fixtures")
            g.start()
            try:
                s3 = g.client()
                upload_fixtures(s3, source, args)
                log("raw server")
                results["raw"].append(measure_raw(s3, source, args))
                for name in tools:
                    log(name)
                    results[name].append(measure_tool(Tool(name, g, work), s3, source, args))
            finally:
                g.stop()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    columns = ["raw"] + tools
    medians = {}
    for c in columns:
        keys = set().union(*(r.keys() for r in results[c])) if results[c] else set()
        medians[c] = {k: statistics.median([r[k] for r in results[c] if k in r]) for k in keys}
    text = table(medians, columns)
    cpu = run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).stdout.strip()
    header = (
        f"bucketfs benchmark, {datetime.date.today().isoformat()}, {platform.node()}: "
        f"{os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // GiB} GiB, "
        f"kernel {platform.release()}; Garage 2.5.0 on tmpfs, loopback with quickack; "
        f"medians of {args.runs} run(s), a fresh server each; default options of every tool "
        f"(rclone: --vfs-cache-mode writes)."
    )
    print(header)
    print()
    print(text)
    out_dir = os.path.join(REPO, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{datetime.date.today().isoformat()}-{platform.node()}")
    with open(stem + ".md", "w") as f:
        f.write(header + "\n\n" + text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"header": header, "runs": results, "medians": medians}, f, indent=1)
    log(f"saved {stem}.md and .json")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
