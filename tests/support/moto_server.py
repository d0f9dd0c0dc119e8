#!/usr/bin/env python3
"""The S3 server for bucketfs's tests and demo: moto, verifying SigV4.

Starts moto's server on 127.0.0.1 (a free port), creates an IAM user with an
allow-all policy and an access key (and a role, `bucketfs-temporary`, with the
same policy, for temporary keys), then turns authentication on, so that from
then on every request must be signed with that key (a wrong secret gets 403
SignatureDoesNotMatch). Prints one line:

    READY <port> <access key id> <secret access key>

and serves until its standard input reaches end of file, which happens when
the process that started it exits, however it exits. Nothing is left behind.

With --bucket NAME it also creates that bucket (with versioning) and, with
--demo, puts a few sample files in it.
"""
import argparse
import json
import sys
import urllib.request

import boto3
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket")
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    url = f"http://127.0.0.1:{port}"

    bootstrap = dict(
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam = boto3.client("iam", **bootstrap)
    iam.create_user(UserName="bucketfs-test")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="bucketfs-test", PolicyName="all", PolicyDocument=json.dumps(policy)
    )
    # A role that the credential tests assume (through STS, a fake container
    # endpoint or a fake IMDS) to get temporary keys moto honours.
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam.create_role(
        RoleName="bucketfs-temporary", AssumeRolePolicyDocument=json.dumps(trust)
    )
    iam.put_role_policy(
        RoleName="bucketfs-temporary",
        PolicyName="all",
        PolicyDocument=json.dumps(policy),
    )
    key = iam.create_access_key(UserName="bucketfs-test")["AccessKey"]
    access, secret = key["AccessKeyId"], key["SecretAccessKey"]

    # From here on, requests must be signed with the key just made.
    reset = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(reset).read()

    if args.bucket:
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.create_bucket(Bucket=args.bucket)
        s3.put_bucket_versioning(
            Bucket=args.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        if args.demo:
            samples = {
                "hello.txt": b"Hello from a bucket!\n",
                "docs/readme.md": b"# Notes\nThese files live in S3.\n",
                "docs/2026/report.csv": b"month,total\njan,10\nfeb,12\n",
                "photos/cat.jpg": bytes(range(256)) * 64,
            }
            for name, body in samples.items():
                s3.put_object(Bucket=args.bucket, Key=name, Body=body)

    print("READY", port, access, secret, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
