"""Build the sandbox image without a registry: `docker import` of an almost empty root.

The image holds no Python. It carries the label `grader.runtime=host`, which tells the
Docker backend to mount this machine's Python runtime, virtual environment, the packages
that run in the sandbox (contract/, sandboxed/) and stand-in checkpoints read-only at run
time. Use it where the production image (sandbox/Dockerfile) cannot be pulled or built.

Usage: `python -m sandbox.local_image [--tag TAG] [--force]`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import time

RUNTIME_LABEL = "grader.runtime"
HOST_RUNTIME = "host"
# Top-level links of a merged-/usr host, copied into the image so that /usr mounted
# read-only also serves /bin and /lib. /sbin stays a real directory: Docker mounts its
# init binary there and must not have to create it inside the read-only /usr.
MERGED_USR_LINKS = ("bin", "lib", "lib32", "lib64", "libx32")
DIRECTORIES = (
    "dev",
    "etc",
    "proc",
    "sbin",
    "sys",
    "usr",
    "sandbox",
    "sandbox/lib",
    "sandbox/torch_home",
)
ACCOUNTS = {
    "etc/passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def rootfs_tar() -> bytes:
    """The image's whole root filesystem, as a tar archive built in memory."""
    now = int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, now
            info.linkname, info.size = link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for name in DIRECTORIES:
            add(name, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        for name in MERGED_USR_LINKS:
            host = f"/{name}"
            if os.path.islink(host):
                add(name, tarfile.SYMTYPE, 0o777, link=os.readlink(host))
        for name, text in ACCOUNTS.items():
            add(name, tarfile.REGTYPE, 0o644, text.encode())
    return buf.getvalue()


def build(client, tag: str) -> str:
    """Import the root filesystem as `tag`; returns the image id. `client` is a docker.APIClient."""
    repository, _, version = tag.rpartition(":")
    changes = [
        f"LABEL {RUNTIME_LABEL}={HOST_RUNTIME}",
        "USER 65534:65534",
        "WORKDIR /tmp",
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    ]
    client.import_image_from_data(
        rootfs_tar(), repository=repository or tag, tag=version or "latest", changes=changes
    )
    return client.inspect_image(tag)["Id"]


def main(argv: list[str] | None = None) -> int:
    import docker
    import docker.errors

    from core.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m sandbox.local_image", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tag", default=get_settings().docker_image)
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = parser.parse_args(argv)
    client = docker.APIClient(timeout=120)
    if not args.force:
        try:
            client.inspect_image(args.tag)
            print(f"{args.tag} already exists (use --force to rebuild)")
            return 0
        except docker.errors.ImageNotFound:
            pass
    print(f"{args.tag} built: {build(client, args.tag)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
