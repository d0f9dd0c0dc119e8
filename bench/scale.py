#!/usr/bin/env python3
"""Millions of objects: `ls -l`, `find` and `du -s` on buckets too big to
fill through a real server in a benchmark run, with each tool's time,
requests and peak memory.

Run by bench/run.sh (`bench/run.sh scale ...`) inside its network namespace.

The bucket is synthetic: a small S3 server on loopback (below) answers
ListObjectsV2, HeadObject, GetObject and the bucket calls the tools make at
mount for a key space held in memory, every object 100 bytes with one
ETag and one time. So a fixture of a million objects costs nothing to
create (its "creation time" is the server's start, reported apart), and
the server answers fast enough that the time measured is the tools'. It
checks no signature: it measures the tools, not authentication. What it
cannot show (versions, writes) the other benchmarks measure on Garage.

Key space: `flat100k/` (100,000 files), `flat1m/` (1,000,000 files) and
`tree1m/d000/` … `tree1m/d999/` (1,000 directories of 1,000 files).
"""
import argparse
import bisect
import datetime
import hashlib
import http.server
import json
import os
import platform
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BUCKET, REPO, Tool, drop_caches, log  # noqa: E402

BODY = b"x" * 100
ETAG = hashlib.md5(BODY).hexdigest()
LAST_MODIFIED_ISO = "2026-01-01T00:00:00.000Z"
LAST_MODIFIED_HTTP = "Thu, 01 Jan 2026 00:00:00 GMT"


class KeySpace:
    def __init__(self):
        start = time.monotonic()
        keys = [f"flat100k/f{i:06d}" for i in range(100_000)]
        keys += [f"flat1m/f{i:07d}" for i in range(1_000_000)]
        keys += [f"tree1m/d{d:03d}/f{f:03d}" for d in range(1000) for f in range(1000)]
        keys.sort()
        self.keys = keys
        self.set = set(keys)
        self.built_s = time.monotonic() - start

    def list(self, prefix, delimiter, after, max_keys):
        """(contents, common prefixes, next marker or None)."""
        i = bisect.bisect_right(self.keys, after) if after else bisect.bisect_left(self.keys, prefix)
        contents, prefixes = [], []
        last = None
        while i < len(self.keys) and len(contents) + len(prefixes) < max_keys:
            key = self.keys[i]
            if not key.startswith(prefix):
                break
            rest = key[len(prefix):]
            cut = rest.find(delimiter) if delimiter else -1
            if cut >= 0:
                common = prefix + rest[:cut + len(delimiter)]
                prefixes.append(common)
                last = common
                # Skip the whole subtree.
                i = bisect.bisect_left(self.keys, common + "\U0010ffff")
                continue
            contents.append(key)
            last = key
            i += 1
        more = i < len(self.keys) and self.keys[i].startswith(prefix)
        return contents, prefixes, (last if more else None)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def handler(space, counts):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", headers=(), head=False):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def parse(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            path = urllib.parse.unquote(url.path).lstrip("/")
            bucket, _, key = path.partition("/")
            return bucket, key, {k: v[0] for k, v in query.items()}

        def count(self, op):
            with counts["lock"]:
                counts[op] = counts.get(op, 0) + 1

        def object_headers(self):
            return [("ETag", f'"{ETAG}"'), ("Last-Modified", LAST_MODIFIED_HTTP),
                    ("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]

        def do_HEAD(self):
            bucket, key, _ = self.parse()
            if not key:
                self.count("HeadBucket")
                return self.reply(200, headers=[("x-amz-bucket-region", "garage")], head=True)
            self.count("HeadObject")
            if key in space.set:
                self.send_response(200)
                for k, v in self.object_headers():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
            else:
                self.reply(404, head=True)

        def do_GET(self):
            bucket, key, q = self.parse()
            if key:
                self.count("GetObject")
                if key not in space.set:
                    return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                      [("Content-Type", "application/xml")])
                body, status, extra = BODY, 200, []
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    a = int(a or 0)
                    b = min(int(b) if b else len(BODY) - 1, len(BODY) - 1)
                    body, status = BODY[a:b + 1], 206
                    extra = [("Content-Range", f"bytes {a}-{b}/{len(BODY)}")]
                return self.reply(status, body, self.object_headers() + extra)
            if "versioning" in q:
                self.count("Bucket")
                return self.reply(200, b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>',
                                  [("Content-Type", "application/xml")])
            if "location" in q:
                self.count("Bucket")
                return self.reply(200, b'<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">garage</LocationConstraint>',
                                  [("Content-Type", "application/xml")])
            if set(q) & {"acl", "policy", "cors", "lifecycle", "tagging", "uploads", "versions"}:
                self.count("Bucket")
                return self.reply(501, b"<Error><Code>NotImplemented</Code></Error>",
                                  [("Content-Type", "application/xml")])
            self.count("ListObjects")
            v2 = q.get("list-type") == "2"
            prefix = q.get("prefix", "")
            delimiter = q.get("delimiter", "")
            max_keys = min(int(q.get("max-keys", "1000")), 1000)
            after = q.get("continuation-token") or q.get("start-after") or q.get("marker") or ""
            contents, prefixes, next_marker = space.list(prefix, delimiter, after, max_keys)
            out = ['<?xml version="1.0" encoding="UTF-8"?>',
                   '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                   f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix>",
                   f"<MaxKeys>{max_keys}</MaxKeys>"]
            if delimiter:
                out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
            out.append(f"<IsTruncated>{'true' if next_marker else 'false'}</IsTruncated>")
            if v2:
                out.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
                if next_marker:
                    out.append(f"<NextContinuationToken>{escape(next_marker)}</NextContinuationToken>")
            elif next_marker:
                out.append(f"<NextMarker>{escape(next_marker)}</NextMarker>")
            for k in contents:
                out.append(f"<Contents><Key>{escape(k)}</Key><LastModified>{LAST_MODIFIED_ISO}"
                           f"</LastModified><ETag>&quot;{ETAG}&quot;</ETag><Size>{len(BODY)}</Size>"
                           "<StorageClass>STANDARD</StorageClass></Contents>")
            for p in prefixes:
                out.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
            out.append("</ListBucketResult>")
            self.reply(200, "".join(out).encode(), [("Content-Type", "application/xml")])

        def do_PUT(self):
            self.parse()
            self.count("Refused")
            self.reply(403, b"<Error><Code>AccessDenied</Code></Error>")

        do_POST = do_DELETE = do_PUT

    return Handler


class FakeGarage:
    """What Tool needs of a server: the keys."""
    key_id = "scale-key"
    secret = "scale-secret-not-checked"


def run_limited(cmd, limit):
    start = time.monotonic()
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=limit,
                       check=True)
        return time.monotonic() - start, "ok"
    except subprocess.TimeoutExpired:
        return limit, f"stopped after {limit} s"
    except subprocess.CalledProcessError as e:
        return time.monotonic() - start, f"fails (exit {e.returncode})"


WORKLOADS = [
    ("ls_100k", "`ls -l` of 100,000 objects in one directory", ["ls", "-l", "{mnt}/flat100k"]),
    ("ls_1m", "`ls -l` of 1,000,000 objects in one directory", ["ls", "-l", "{mnt}/flat1m"]),
    ("du_flat1m", "`du -s` of that directory, after the `ls -l`", ["du", "-s", "{mnt}/flat1m"]),
    ("find_1m", "`find` of 1,000,000 objects in 1,000 directories", ["find", "{mnt}/tree1m"]),
    ("du_1m", "`du -s` of the same tree, after the find", ["du", "-s", "{mnt}/tree1m"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tools", default="bucketfs,bucketfs-trust,s3fs,rclone,mountpoint-s3")
    ap.add_argument("--limit", type=int, default=600, help="seconds a command may take")
    ap.add_argument("--tag", default="",
                    help="saved as ...-scale-TAG.md, apart from the full run of the day")
    args = ap.parse_args()
    names = []
    for name in args.tools.split(","):
        base = name.split("-trust")[0]
        binary = {"bucketfs": os.environ.get("BUCKETFS_BIN", ""), "s3fs": shutil.which("s3fs"),
                  "rclone": shutil.which("rclone"),
                  "mountpoint-s3": os.environ.get("MOUNT_S3_BIN", "")}.get(base)
        if binary and os.path.exists(binary):
            names.append(name)
        else:
            log(f"{name} not found: its column is left out")

    space = KeySpace()
    log(f"key space of {len(space.keys):,} objects built in {space.built_s:.1f} s")
    counts = {"lock": threading.Lock()}
    server = Server(("127.0.0.1", 0), handler(space, counts))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    work = tempfile.mkdtemp(prefix="bucketfs-scale-")
    results = {}
    try:
        for name in names:
            base = name.split("-trust")[0]
            extra = ["-o", "trust_listings"] if name.endswith("-trust") else []
            tool = Tool(base, FakeGarage(), work, endpoint=endpoint, extra=extra)
            drop_caches()
            tool.mount()
            r = {}
            try:
                for key, _, cmd in WORKLOADS:
                    with counts["lock"]:
                        before = {k: v for k, v in counts.items() if k != "lock"}
                    log(f"{name}: {key}")
                    seconds, outcome = run_limited([c.format(mnt=tool.mnt) for c in cmd],
                                                   args.limit)
                    with counts["lock"]:
                        after = {k: v for k, v in counts.items() if k != "lock"}
                    requests = sum(after.values()) - sum(before.values())
                    r[key] = {"seconds": seconds, "outcome": outcome, "requests": requests}
                r["peak_rss_mib"] = tool.peak_rss_mib()
            finally:
                tool.unmount()
            results[name] = r
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, title, _ in WORKLOADS:
        cells = []
        for name in names:
            w = results[name][key]
            text = f"{w['seconds']:.1f} s, {w['requests']:,} requests"
            if w["outcome"] != "ok":
                text += f" ({w['outcome']})"
            cells.append(text)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("| daemon peak RSS after all five, MiB | "
                 + " | ".join(f"{results[n]['peak_rss_mib']:.0f}" for n in names) + " |")
    text = "\n".join(lines)
    header = (
        f"bucketfs at scale, {datetime.date.today().isoformat()}, {platform.node()}: a synthetic "
        f"bucket of {len(space.keys):,} objects served from memory on loopback (built in "
        f"{space.built_s:.1f} s, not counted); one mount per tool for the five commands in "
        "order, each tool with its defaults (bucketfs-trust: `-o trust_listings`); "
        f"commands stopped after {args.limit} s."
    )
    print(header)
    print()
    print(text)
    out_dir = os.path.join(REPO, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{datetime.date.today().isoformat()}-{platform.node()}-scale")
    if args.tag:
        stem += f"-{args.tag}"
    with open(stem + ".md", "w") as f:
        f.write(header + "\n\n" + text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"header": header, "results": results}, f, indent=1)
    log(f"saved {stem}.md and .json")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
