#!/usr/bin/env python3
"""Drives the ORAS Python client (the `oras` package on PyPI) against a
registry over plain HTTP, for the end-to-end tests in e2e_oras.rs.

Every subcommand prints exactly one JSON object on stdout; the client's own
logging goes to stderr. A failure exits non-zero with a traceback.
"""

import argparse
import contextlib
import json
import os
import sys

try:
    import oras.layout
    import oras.oci
    import oras.provider
except ImportError as e:  # pragma: no cover - reported to the Rust side
    sys.exit(f"the oras Python package is missing ({e}); install it with `pip install oras`")


def client(host):
    # insecure=True: plain http:// to the registry.
    return oras.provider.Registry(hostname=host, insecure=True)


def headers_of(response):
    return {k.lower(): v for k, v in response.headers.items()}


def cmd_push(args):
    reg = client(args.host)
    subject = None
    if args.subject_digest:
        subject = oras.oci.Subject(
            mediaType=args.subject_media_type,
            digest=args.subject_digest,
            size=args.subject_size,
        )
    annotations = dict(a.split("=", 1) for a in args.annotation) or None
    # Paths are given relative to the work directory, which is how the
    # client names the layers (org.opencontainers.image.title).
    os.chdir(args.workdir)
    response = reg.push(
        target=f"{args.host}/{args.target}",
        files=args.file,
        manifest_config=args.config,
        manifest_annotations=annotations,
        subject=subject,
        quiet=True,
    )
    return {"status": response.status_code, "headers": headers_of(response)}


def cmd_pull(args):
    reg = client(args.host)
    files = reg.pull(target=f"{args.host}/{args.target}", outdir=args.outdir)
    return {"files": sorted(os.path.relpath(f, args.outdir) for f in files)}


def cmd_manifest(args):
    reg = client(args.host)
    return {"manifest": reg.get_manifest(f"{args.host}/{args.target}")}


def cmd_tags(args):
    reg = client(args.host)
    return {"tags": reg.get_tags(f"{args.host}/{args.target}")}


def cmd_delete_tag(args):
    reg = client(args.host)
    return {"deleted": reg.delete_tag(f"{args.host}/{args.target}", args.tag)}


def cmd_layout_push(args):
    reg = client(args.host)
    layout = oras.layout.NewLayout(args.layout)
    response = layout.push_to_registry(reg, f"{args.host}/{args.target}", tag=args.tag)
    return {"status": response.status_code, "headers": headers_of(response)}


def cmd_layout_pull(args):
    reg = client(args.host)
    oras.layout.NewLayoutFromRegistry(args.layout, reg, f"{args.host}/{args.target}", tag=args.tag)
    return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func):
        p = sub.add_parser(name)
        p.add_argument("--host", required=True, help="host:port of the registry")
        p.add_argument("--target", required=True, help="repository[:tag|@digest]")
        p.set_defaults(func=func)
        return p

    p = command("push", cmd_push)
    p.add_argument("--workdir", required=True)
    p.add_argument("--file", action="append", default=[], help="path[:mediaType]")
    p.add_argument("--config", help="path:mediaType of the manifest config")
    p.add_argument("--annotation", action="append", default=[], help="key=value")
    p.add_argument("--subject-digest")
    p.add_argument("--subject-size", type=int)
    p.add_argument("--subject-media-type", default="application/vnd.oci.image.manifest.v1+json")

    p = command("pull", cmd_pull)
    p.add_argument("--outdir", required=True)

    command("manifest", cmd_manifest)
    command("tags", cmd_tags)

    p = command("delete-tag", cmd_delete_tag)
    p.add_argument("--tag", required=True)

    for name, func in (("layout-push", cmd_layout_push), ("layout-pull", cmd_layout_pull)):
        p = command(name, func)
        p.add_argument("--layout", required=True)
        p.add_argument("--tag", required=True, help="ref.name in the layout's index.json")

    args = parser.parse_args()
    # Keep stdout for the single JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        result = args.func(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
