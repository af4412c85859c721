"""The local stack's S3: S3Proxy keeping objects as files under ``.stack/data/s3`` (jars: ``jvm/s3/pom.xml``)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from spotlake.maven import resolve_jars
from spotlake.stack import StackLayout, aws_env
from spotlake_dev.localstack.java import heap_args, java_bin, properties_text, write_if_changed
from spotlake_dev.localstack.process import ServiceSpec


def s3_dir(layout: StackLayout) -> Path:
    return layout.data_dir / "s3"


def s3_ready(port: int, timeout: float = 2.0) -> bool:
    """Whether the server answers S3 requests (an unsigned one is refused with 403)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def s3_spec(layout: StackLayout) -> ServiceSpec:
    """S3Proxy on 127.0.0.1 serving buckets from ``.stack/data/s3/objects`` (one folder per bucket)."""
    home = s3_dir(layout)
    conf = home / "s3proxy.conf"
    logback = layout.project / "jvm" / "s3" / "logback.xml"  # warnings only (S3Proxy's default is DEBUG)
    port = layout.port("s3")
    keys = aws_env(layout)

    def prepare() -> None:
        resolve_jars(layout, "s3")
        (home / "objects").mkdir(parents=True, exist_ok=True)
        write_if_changed(
            conf,
            properties_text(
                {
                    "s3proxy.endpoint": f"http://127.0.0.1:{port}",
                    "s3proxy.authorization": "aws-v2-or-v4",
                    "s3proxy.identity": keys["AWS_ACCESS_KEY_ID"],
                    "s3proxy.credential": keys["AWS_SECRET_ACCESS_KEY"],
                    "jclouds.provider": "filesystem-nio2",
                    "jclouds.identity": keys["AWS_ACCESS_KEY_ID"],
                    "jclouds.credential": keys["AWS_SECRET_ACCESS_KEY"],
                    "jclouds.filesystem.basedir": home / "objects",
                }
            ),
        )

    return ServiceSpec(
        name="s3",
        argv=[
            java_bin(),
            *heap_args(layout, "SPOTLAKE_S3_HEAP", "-Xms32m -Xmx192m"),
            "-XX:+UseSerialGC",
            "-XX:ReservedCodeCacheSize=48m",
            f"-Dlogback.configurationFile={logback}",
            "-cp",
            f"{layout.jars('s3')}/*",
            "org.gaul.s3proxy.Main",
            "--properties",
            str(conf),
        ],
        ports=[port],
        ready=lambda: s3_ready(port),
        cwd=home,
        prepare=prepare,
        ready_timeout=60.0,
        stop_timeout=20.0,
    )
