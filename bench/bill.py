#!/usr/bin/env python3
"""What each tool's requests cost: bucketfs and its peers on the same
workloads, every request counted by a proxy on loopback, and the bill
under B2's and AWS's price lists.

Run by bench/run.sh (`bench/run.sh bill ...`) inside its network namespace.
Each workload runs on a fresh mount of a fresh fixture; the count covers
the whole session, from the mount's first request to the daemon's exit
(an unmount flushes what a tool still holds). Fixtures are uploaded
straight to the server, not through the proxy.

The proxy names each request's S3 operation from its method, query and
headers, puts it in B2's transaction class (A free, B GET/HEAD, C lists,
copies and bucket calls) and counts the body bytes of GetObject answers.
Prices are those of FACTS.md; daily free allowances are left out.
"""
import argparse
import concurrent.futures
import datetime
import http.client
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BUCKET, MiB, REPO, Garage, Tool, drop_caches, log, make_source, run  # noqa: E402

UPSTREAM = ("127.0.0.1", 3900)

# B2 classes of each operation (Backblaze "B2 transactions price").
CLASS = {
    "PutObject": "A", "UploadPart": "A", "CreateMultipartUpload": "A",
    "CompleteMultipartUpload": "A", "AbortMultipartUpload": "A",
    "DeleteObject": "A", "DeleteObjects": "A",
    "GetObject": "B", "HeadObject": "B",
    "ListObjects": "C", "ListObjectVersions": "C", "ListParts": "C",
    "ListMultipartUploads": "C", "CopyObject": "C", "UploadPartCopy": "C",
    "Bucket": "C",
}


def operation(method, target, headers):
    """The S3 operation of a path-style request."""
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    parts = url.path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    copy = "x-amz-copy-source" in headers
    if method == "GET":
        if not has_key:
            if "versions" in query:
                return "ListObjectVersions"
            if "uploads" in query:
                return "ListMultipartUploads"
            if "list-type" in query or not query or set(query) <= {
                "prefix", "delimiter", "marker", "max-keys", "encoding-type"}:
                return "ListObjects"
            return "Bucket"
        if "uploadId" in query:
            return "ListParts"
        return "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "Bucket"
    if method == "PUT":
        if not has_key:
            return "Bucket"
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "Bucket"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "Bucket"
    return "Bucket"


# BILL_TRACE=FILE appends each request (tool and workload, operation,
# status, method and path) to FILE: where a bill comes from.
TRACE = os.environ.get("BILL_TRACE")
TRACE_LOCK = threading.Lock()


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.downloaded = 0
        self.label = ""

    def reset(self):
        with self.lock:
            self.ops = {}
            self.downloaded = 0

    def add(self, op, downloaded):
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            self.downloaded += downloaded

    def snapshot(self):
        with self.lock:
            return dict(self.ops), self.downloaded


class Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def handler(counts):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            # The proxy answers `Expect: 100-continue` itself (the server
            # library does), so the body is read whole before forwarding.
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "expect")}
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self.read_chunked()
                headers.pop("Transfer-Encoding", None)
                headers["Content-Length"] = str(len(body))
            op = operation(self.command, self.path, {k.lower() for k in self.headers.keys()})
            conn = getattr(self, "_upstream", None)
            if conn is None:
                conn = self._upstream = http.client.HTTPConnection(*UPSTREAM, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = self._upstream = http.client.HTTPConnection(*UPSTREAM, timeout=300)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            ok_get = op == "GetObject" and 200 <= resp.status < 300
            counts.add(op, len(data) if ok_get else 0)
            if TRACE:
                with TRACE_LOCK, open(TRACE, "a") as f:
                    f.write(f"{counts.label}\t{op}\t{resp.status}\t{self.command} {self.path}\n")

        def read_chunked(self):
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    return Handler


# Prices in dollars per request, and per downloaded GB.
PRICES = {
    "b2": {"A": 0.0, "B": 0.004 / 10_000, "C": 0.004 / 1_000, "GB": 0.01},
    "aws": {"GetObject": 0.0004 / 1000, "HeadObject": 0.0004 / 1000,
            "DeleteObject": 0.0, "DeleteObjects": 0.0, "AbortMultipartUpload": 0.0,
            "other": 0.005 / 1000, "GB": 0.0},
}


def bill(ops, downloaded, prices):
    if "A" in prices:
        total = sum(n * prices[CLASS.get(op, "C")] for op, n in ops.items())
    else:
        total = sum(n * prices.get(op, prices["other"]) for op, n in ops.items())
    return total + downloaded / 1e9 * prices["GB"]


def classes(ops):
    out = {"A": 0, "B": 0, "C": 0}
    for op, n in ops.items():
        out[CLASS.get(op, "C")] += n
    return out


# ------------------------------------------------------------ workloads
#
# Each: (name, fixture(s3, ctx), action(mnt, ctx)). The fixture runs before
# the mount, straight to the server; the action runs on the mount.

def put_many(s3, keys, body):
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=body), keys))


def wl_ls(n):
    def fixture(s3, ctx):
        put_many(s3, [f"ls{n}/f{i:06d}" for i in range(n)], b"x" * 100)

    def action(mnt, ctx):
        out = run(["ls", "-l", os.path.join(mnt, f"ls{n}")]).stdout
        assert out.count("\n") >= n, out[:200]
    return fixture, action


def wl_find_stat(mnt, ctx):
    run(["find", os.path.join(mnt, "tree"), "-type", "f", "-exec", "stat", "-c", "%s", "{}", "+"])


def fx_tree(s3, ctx):
    put_many(s3, [f"tree/d{i // 100}/f{i:04d}" for i in range(1000)], b"y" * 4096)


def fx_big(size):
    def fixture(s3, ctx):
        s3.upload_file(ctx["source"], BUCKET, "big.bin")
    return fixture


def wl_read(mnt, ctx):
    with open(os.path.join(mnt, "big.bin"), "rb") as f:
        while f.read(MiB):
            pass


def wl_write(mnt, ctx):
    run(["dd", f"if={ctx['source']}", f"of={os.path.join(mnt, 'written.bin')}", "bs=1M"])
    ctx["expect"] = ("written.bin", 1)


def wl_create(mnt, ctx):
    d = os.path.join(mnt, "created")
    os.mkdir(d)
    body = b"s" * 4096
    for i in range(1000):
        with open(os.path.join(d, f"f{i:04d}"), "wb") as f:
            f.write(body)
    ctx["expect"] = ("created/f", 1000)


def wl_cp(mnt, ctx):
    run(["cp", "-r", os.path.join(mnt, "tree"), os.path.join(mnt, "copy")])
    ctx["expect"] = ("copy/d", 1000)


def fx_copy(s3, ctx):
    put_many(s3, [f"copy/d{i // 100}/f{i:04d}" for i in range(1000)], b"y" * 4096)


def wl_rm(mnt, ctx):
    run(["rm", "-r", os.path.join(mnt, "copy")])


def wl_mv(mnt, ctx):
    run(["mv", os.path.join(mnt, "tree"), os.path.join(mnt, "moved")])
    ctx["expect"] = ("moved/d", 1000)


def fx_64(s3, ctx):
    s3.put_object(Bucket=BUCKET, Key="sixty-four.bin", Body=os.urandom(64 * MiB))


def wl_overwrite(mnt, ctx):
    s3 = ctx["s3"]
    before = s3.head_object(Bucket=BUCKET, Key="sixty-four.bin")["ETag"]
    run(["dd", "if=/dev/urandom", f"of={os.path.join(mnt, 'sixty-four.bin')}", "bs=4096",
         "count=1", "seek=4000", "conv=notrunc"])
    ctx["changed"] = ("sixty-four.bin", before)


def wait_for_uploads(s3, ctx, limit):
    """Tools that upload after close (rclone's write-back cache) have done
    so: the count includes their uploads, as for the others."""
    deadline = time.monotonic() + limit
    if "expect" in ctx:
        prefix, n = ctx.pop("expect")
        paginator = s3.get_paginator("list_objects_v2")
        while time.monotonic() < deadline:
            found = sum(1 for p in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
                        for o in p.get("Contents", []) if not o["Key"].endswith("/"))
            if found >= n:
                return True
            time.sleep(0.2)
        return False
    if "changed" in ctx:
        key, before = ctx.pop("changed")
        while time.monotonic() < deadline:
            if s3.head_object(Bucket=BUCKET, Key=key)["ETag"] != before:
                return True
            time.sleep(0.2)
        return False
    return True


def workloads(args):
    ls_fx, ls_act = wl_ls(10_000)
    out = [
        ("`ls -l` 10,000 objects", ls_fx, ls_act),
        ("`find` + `stat` 1,000 files", fx_tree, wl_find_stat),
        ("cold read 256 MiB", fx_big(256), wl_read),
        ("write 256 MiB", None, wl_write),
        ("create 1,000 × 4 KiB", None, wl_create),
        ("`cp -r` 1,000-file tree", fx_tree, wl_cp),
        ("`rm -r` 1,000-file tree", fx_copy, wl_rm),
        ("`mv` of a 1,000-file directory", fx_tree, wl_mv),
        ("overwrite 4 KiB inside 64 MiB", fx_64, wl_overwrite),
    ]
    if args.scale:
        fx, act = wl_ls(100_000)
        out.append(("`ls -l` 100,000 objects", fx, act))
    return out


def measure(tool_name, garage, work, proxy_url, counts, workload, ctx, strict, limit):
    name, fixture, action = workload
    s3 = garage.client()
    # A fresh bucket state: remove what an earlier workload left.
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    if fixture:
        fixture(s3, ctx)
    drop_caches()
    counts.reset()
    counts.label = f"{tool_name}\t{name}"
    extra = ["--price-list", "b2"] if tool_name.endswith("-b2") else []
    tool = Tool(tool_name.removesuffix("-b2"), garage, work, endpoint=proxy_url, strict=strict,
                extra=extra)
    tool.mount()
    start = time.monotonic()
    outcome = "ok"
    done = threading.Event()

    def act():
        nonlocal outcome
        try:
            action(tool.mnt, ctx)
        except Exception as e:  # a tool that cannot do it: the table says so
            outcome = f"fails ({type(e).__name__})"
        finally:
            done.set()

    ctx["s3"] = s3
    worker = threading.Thread(target=act, daemon=True)
    worker.start()
    if not done.wait(limit):
        outcome = f"stopped after {limit} s"
    elif outcome == "ok" and not wait_for_uploads(s3, ctx, limit):
        outcome = "not in the bucket"
    ctx.pop("expect", None)
    ctx.pop("changed", None)
    seconds = time.monotonic() - start
    tool.unmount()
    ops, downloaded = counts.snapshot()
    return {"ops": ops, "downloaded": downloaded, "seconds": seconds, "outcome": outcome}


def cell(r):
    if r is None:
        return "–"
    total = sum(r["ops"].values())
    c = classes(r["ops"])
    b2 = bill(r["ops"], r["downloaded"], PRICES["b2"]) * 1e6
    aws = bill(r["ops"], r["downloaded"], PRICES["aws"]) * 1e6
    text = f"{total:,} ({c['A']:,}/{c['B']:,}/{c['C']:,}) B2 {b2:,.0f} · AWS {aws:,.0f}"
    if r["outcome"] != "ok":
        text += f", {r['outcome']}"
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tools", default="bucketfs,bucketfs-b2,s3fs,rclone,mountpoint-s3",
                    help="bucketfs-b2: bucketfs with --price-list b2 (as on a B2 endpoint)")
    ap.add_argument("--scale", action="store_true", help="add ls -l of 100,000 objects")
    ap.add_argument("--strict", action="store_true",
                    help="also run each workload with no metadata caching (metadata_ttl=0)")
    ap.add_argument("--only", default="", help="comma-separated workload numbers (1-based)")
    ap.add_argument("--limit", type=int, default=600, help="seconds a workload may take")
    ap.add_argument("--tag", default="",
                    help="added to the results' file name (a partial run keeps the full table)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="measure nothing: one table of these saved runs, a later run's cell "
                         "replacing an earlier's (a tool measured again after a change)")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.tools.split(","), args.tag)
    tools = []
    for name in args.tools.split(","):
        binary = {"bucketfs": os.environ.get("BUCKETFS_BIN", ""),
                  "bucketfs-b2": os.environ.get("BUCKETFS_BIN", ""), "s3fs": shutil.which("s3fs"),
                  "rclone": shutil.which("rclone"),
                  "mountpoint-s3": os.environ.get("MOUNT_S3_BIN", "")}.get(name)
        if binary and os.path.exists(binary):
            tools.append(name)
        else:
            log(f"{name} not found: its column is left out")
    chosen = workloads(args)
    if args.only:
        keep = {int(x) for x in args.only.split(",")}
        chosen = [w for i, w in enumerate(chosen, 1) if i in keep]
    modes = [False, True] if args.strict else [False]

    shm = tempfile.mkdtemp(prefix="bucketfs-bill-", dir="/dev/shm")
    work = tempfile.mkdtemp(prefix="bucketfs-bill-work-")
    counts = Counts()
    proxy = Proxy(("127.0.0.1", 0), handler(counts))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    source = os.path.join(shm, "source.bin")
    results = {}
    g = Garage(os.path.join(shm, "garage"))
    try:
        make_source(source, 256 * MiB)
        g.start()
        ctx = {"source": source}
        for workload in chosen:
            for strict in modes:
                row = workload[0] + (" (`metadata_ttl=0`)" if strict else "")
                results[row] = {}
                for name in tools:
                    log(f"{row}: {name}")
                    results[row][name] = measure(name, g, work, proxy_url, counts, workload,
                                                 ctx, strict, args.limit)
    finally:
        g.stop()
        proxy.shutdown()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    text = table(results, tools)
    header = (
        f"bucketfs request bill, {datetime.date.today().isoformat()}, {platform.node()}: "
        "requests counted by a proxy on loopback in front of Garage 2.5.0, a fresh mount per "
        "workload with each tool's defaults; each cell: requests in total (B2 class A/B/C), then "
        "the bill in micro-dollars under B2's and AWS's price lists (no free allowances)."
    )
    save(header, text, results, args.tag)


def merge(paths, tools, tag):
    results = {}
    sources = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        for row, by_tool in run["results"].items():
            results.setdefault(row, {}).update(by_tool)
        sources.append(f"{os.path.basename(path)} ({', '.join(sorted({t for r in run['results'].values() for t in r}))})")
    present = [t for t in tools if any(t in r for r in results.values())]
    header = ("bucketfs request bill, merged from " + "; then ".join(sources)
              + ": a later run's cell replaces an earlier one's. Each cell: requests in total "
              "(B2 class A/B/C), then the bill in micro-dollars under B2's and AWS's price lists "
              "(no free allowances).")
    save(header, table(results, present), results, tag or "merged")


def table(results, tools):
    """The markdown table of `results` (row -> tool -> measurement)."""
    lines = ["| workload | " + " | ".join(tools) + " | bucketfs / best peer (B2, AWS) |",
             "|---" * (len(tools) + 2) + "|"]
    for row, by_tool in results.items():
        cells = [cell(by_tool.get(t)) for t in tools]
        peers = [by_tool[t] for t in tools
                 if not t.startswith("bucketfs") and t in by_tool
                 and by_tool[t]["outcome"] == "ok"]
        parts = []
        # Under B2's prices bucketfs is as on a B2 endpoint (bucketfs-b2).
        for p, mine_name in (("b2", "bucketfs-b2"), ("aws", "bucketfs")):
            mine = by_tool.get(mine_name) or by_tool.get("bucketfs")
            if not peers or mine is None or mine["outcome"] != "ok":
                parts.append("–")
                continue
            best = min(bill(r["ops"], r["downloaded"], PRICES[p]) for r in peers)
            own = bill(mine["ops"], mine["downloaded"], PRICES[p])
            parts.append(f"{own / best:.2f}×" if best > 0 else ("0" if own == 0 else "∞"))
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {', '.join(parts)} |")
    return "\n".join(lines)


def save(header, text, results, tag):
    """Print the table and keep it, with the raw counts, in bench/results."""
    print(header)
    print()
    print(text)
    out_dir = os.path.join(REPO, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{datetime.date.today().isoformat()}-{platform.node()}-bill")
    if tag:
        stem += f"-{tag}"
    with open(stem + ".md", "w") as f:
        f.write(header + "\n\n" + text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"header": header, "results": results}, f, indent=1)
    log(f"saved {stem}.md and .json")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
