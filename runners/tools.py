"""Running the build tools the runners need (Maven, javac, Go) as subprocesses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


def run_tool(
    cmd: list[str],
    what: str,
    timeout_s: float,
    error: type[Exception],
    env: dict[str, str] | None = None,
) -> None:
    """Run ``cmd``; ``error`` naming ``what`` (with the end of the tool's output) when
    it fails or runs past ``timeout_s``."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        msg = f"{what} took more than {timeout_s:.0f} s"
        raise error(msg) from None
    if done.returncode != 0:
        msg = f"{what} failed: {(done.stdout + done.stderr).strip()[-1500:]}"
        raise error(msg)


def maven_dependency(group: str, artifact: str, version: str, extra: str = "") -> str:
    """One ``<dependency>`` of a POM (``extra``: e.g. its exclusions)."""
    return (
        f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version>{extra}</dependency>"
    )


def maven_project(artifact: str, dependencies: Sequence[str], managed: Sequence[str] = ()) -> str:
    """A POM whose runtime dependencies are ``dependencies`` (``managed``: versions
    pinned for the transitive ones), for :func:`maven_dependencies`."""
    management = (
        f"<dependencyManagement><dependencies>{''.join(managed)}</dependencies>"
        "</dependencyManagement>"
        if managed
        else ""
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">'
        "<modelVersion>4.0.0</modelVersion>"
        f"<groupId>streaming-ml</groupId><artifactId>{artifact}</artifactId>"
        f"<version>1</version><packaging>pom</packaging>{management}"
        f"<dependencies>{''.join(dependencies)}</dependencies></project>\n"
    )


def maven_dependencies(
    pom: Path, output: Path, what: str, timeout_s: float, error: type[Exception]
) -> None:
    """Copy the runtime dependencies of the Maven project ``pom`` into ``output``,
    resolved into the local repository ``m2`` beside the project's folder (the cache),
    from Maven Central or the mirror ``$SML_MAVEN_REPO``."""
    home = pom.parent
    cmd = ["mvn", "-q", "-B", "-f", str(pom), f"-Dmaven.repo.local={home.parent / 'm2'}",
           "dependency:copy-dependencies", f"-DoutputDirectory={output}",
           "-DincludeScope=runtime"]  # fmt: skip
    mirror = os.environ.get("SML_MAVEN_REPO")
    if mirror:
        settings = home / "settings.xml"
        settings.write_text(
            "<settings><mirrors><mirror><id>sml</id><mirrorOf>*</mirrorOf>"
            f"<url>{mirror}</url></mirror></mirrors></settings>\n"
        )
        cmd[3:3] = ["-s", str(settings)]
    run_tool(cmd, f"{what} from {mirror or 'Maven Central'}", timeout_s, error)
