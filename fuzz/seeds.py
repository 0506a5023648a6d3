#!/usr/bin/env python3
"""Writes small valid seed inputs for the layer_apply, manifest, www_authenticate and
archive_load fuzz targets into corpus/<target>/ (corpus/ is not committed; see README.md).

Python's standard library only, plus the `zstd` command for the zstd-compressed seeds (skipped
when it is missing). Deterministic: the same files every run."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

# Python pads tars to 10 KiB records; two blocks (the end marker) is what kiln and docker need,
# and small seeds keep the fuzzers fast.
tarfile.RECORDSIZE = 2 * tarfile.BLOCKSIZE

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def zst(data):
    if shutil.which("zstd") is None:
        return None
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def tar(entries, fmt=tarfile.PAX_FORMAT):
    """entries: (name, kind, extra) with kind file/dir/symlink/link/fifo/chr."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = b"" if isinstance(extra, dict) else extra
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            if isinstance(extra, dict):
                info.pax_headers = extra
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def layers():
    plain = tar([
        ("etc", "dir", None),
        ("etc/hostname", "file", b"kiln\n"),
        ("etc/link", "symlink", "hostname"),
        ("etc/hard", "link", "etc/hostname"),
        ("bin", "dir", None),
        ("bin/sh", "file", b"#!/bin/true\n"),
        ("run", "dir", None),
        ("run/fifo", "fifo", None),
        ("dev", "dir", None),
        ("dev/null", "chr", None),
    ])
    whiteouts = tar([
        ("etc", "dir", None),
        ("etc/.wh.hostname", "file", b""),
        ("var", "dir", None),
        ("var/.wh..wh..opq", "file", b""),
        ("var/new", "file", b"added after the opaque marker\n"),
    ])
    pax = tar([
        ("long/" + "d" * 120 + "/file", "file", b"long name\n"),
        ("xattr", "file", {"SCHILY.xattr.user.kiln": "fuzz", "mtime": "1700000000.123456789"}),
    ])
    gnu = tar([("gnu/" + "n" * 110, "file", b"gnu long name\n")], fmt=tarfile.GNU_FORMAT)
    # What apply must confine: an absolute symlink followed, `..` climbing, a link out.
    hostile = tar([
        ("l", "symlink", "/"),
        ("l/etc", "dir", None),
        ("l/etc/passwd", "file", b"root::0:0::/:/bin/sh\n"),
        ("up", "symlink", "../sentinel"),
        ("up/keep", "file", b"overwritten\n"),
        ("../escape", "file", b"x\n"),
        ("hard", "link", "../sentinel/keep"),
    ])
    seeds = {"plain.tar": plain, "whiteouts.tar": whiteouts, "pax.tar": pax,
             "gnu.tar": gnu, "hostile.tar": hostile, "empty.tar": b"\0" * 1024,
             "plain.tar.gz": gz(plain), "whiteouts.tar.gz": gz(whiteouts)}
    if zst(plain) is not None:
        seeds["plain.tar.zst"] = zst(plain)
        seeds["hostile.tar.zst"] = zst(hostile)
    for name, data in seeds.items():
        write("layer_apply", name, data)
    return plain


def config(diff_ids):
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "fuzz seed"}],
    }, sort_keys=True).encode()


def descriptor(media_type, data, **extra):
    d = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    d.update(extra)
    return d


def files_tar(files):
    return tar([(name, "file", data) for name, data in files])


def archives(layer):
    layer_gz = gz(layer)
    cfg = config([sha256(layer)])
    cfg_hex = sha256(cfg)[7:]
    layer_hex = sha256(layer)[7:]

    docker = files_tar([
        (f"{layer_hex}/layer.tar", layer),
        (f"{cfg_hex}.json", cfg),
        ("manifest.json", json.dumps([{"Config": f"{cfg_hex}.json",
                                       "RepoTags": ["fuzz/seed:latest"],
                                       "Layers": [f"{layer_hex}/layer.tar"]}]).encode()),
    ])

    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", cfg),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)],
    }).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", manifest,
                                 annotations={"io.containerd.image.name": "docker.io/fuzz/seed:oci",
                                              "org.opencontainers.image.ref.name": "oci"})],
    }).encode()

    def blob(data):
        return ("blobs/sha256/" + sha256(data)[7:], data)

    oci = files_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                     blob(manifest), blob(cfg), blob(layer_gz)])

    # An index whose entry is itself an image index, per platform (as `docker save` of a
    # multi-platform image writes).
    nested = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            descriptor("application/vnd.oci.image.manifest.v1+json", manifest,
                       platform={"os": "linux", "architecture": arch})
            for arch in ("amd64", "arm64")
        ],
    }).encode()
    top = json.dumps({"schemaVersion": 2, "manifests": [
        descriptor("application/vnd.oci.image.index.v1+json", nested,
                   annotations={"org.opencontainers.image.ref.name": "multi"})]}).encode()
    oci_nested = files_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                            ("index.json", top), blob(nested), blob(manifest), blob(cfg),
                            blob(layer_gz)])

    for name, data in {"docker.tar": docker, "docker.tar.gz": gz(docker), "oci.tar": oci,
                       "oci-nested.tar": oci_nested}.items():
        write("archive_load", name, data)
    if zst(oci) is not None:
        write("archive_load", "oci.tar.zst", zst(oci))
    return manifest, index, nested


def manifests(manifest, index, nested):
    # The first byte picks the Content-Type (see fuzz_targets/manifest.rs): 0 none, 1 OCI
    # manifest, 2 OCI index, 3 Docker manifest, 4 Docker list, 5 schema 1, 7 application/json.
    digest = sha256(b"x")
    docker_manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest, "size": 1},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": digest, "size": 1}],
    }).encode()
    docker_list = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "digest": digest, "size": 1, "platform": p}
            for p in ({"os": "linux", "architecture": "amd64"},
                      {"os": "linux", "architecture": "arm", "variant": "v7"},
                      {"os": "linux", "architecture": "arm64", "variant": "v8"},
                      {"os": "unknown", "architecture": "unknown"})
        ],
    }).encode()
    schema1 = b'{"schemaVersion":1,"name":"library/busybox","tag":"latest","fsLayers":[]}'

    # A shared-cache manifest and graph that belong together, joined by 0xFF.
    layer = {"digest": sha256(b"layer"), "size": 5,
             "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "diffID": sha256(b"layer-tar")}
    graph = json.dumps({"version": 1, "records": {
        sha256(b"key1"): {"layers": [layer], "added": [True], "created": [1700000000]},
        sha256(b"key2"): {"layers": [layer], "added": [True, False],
                          "created": [1700000000, 1700000001], "baseCreated": 1600000000},
    }}, sort_keys=True, separators=(",", ":")).encode()
    cache_manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.kiln.cache.graph.v1+json", graph),
        "layers": [{"mediaType": layer["mediaType"], "digest": layer["digest"],
                    "size": layer["size"]}],
    }).encode()

    seeds = {
        "oci-manifest": b"\x01" + manifest,
        "oci-index": b"\x02" + index,
        "oci-index-platforms": b"\x00" + nested,
        "docker-manifest": b"\x03" + docker_manifest,
        "docker-list": b"\x04" + docker_list,
        "schema1": b"\x05" + schema1,
        "json-typed": b"\x07" + docker_list,
        "cache": b"\x00" + cache_manifest + b"\xff" + graph,
        "cache-graph-only": b"\x00\xff" + graph,
        "platform": b"\x00linux/arm64/v8",
    }
    for name, data in seeds.items():
        write("manifest", name, data)


def challenges():
    seeds = [
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"',
        'Basic realm="Registry Realm"',
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/r:pull",'
        'error="insufficient_scope"',
        'Basic realm="x", Bearer realm="https://quay.io/v2/auth",service="quay.io"',
        'Bearer realm="https://r.example/token?a=1",scope="repository:a/b:pull,push",'
        'service=r.example, Basic',
        'Bearer realm="quoted \\"inner\\" value"',
    ]
    for i, seed in enumerate(seeds):
        write("www_authenticate", f"challenge-{i}", seed.encode())


def main():
    layer = layers()
    manifests(*archives(layer))
    challenges()
    for target in ("layer_apply", "manifest", "www_authenticate", "archive_load"):
        count = len(os.listdir(os.path.join(CORPUS, target)))
        print(f"corpus/{target}: {count} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
