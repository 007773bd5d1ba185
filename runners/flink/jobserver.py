"""Beam's Flink job server: the published jar, or one assembled from Maven Central.

Beam publishes its Flink job server as one shaded jar per Flink minor version
(``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam version>``). Where that
jar cannot be had (the registry reachable here serves none of them), the same server
is assembled from the artifacts Maven Central does serve:

- ``org.apache.beam:beam-runners-flink-1.19:2.70.0``, which holds the job server's
  entry point (``FlinkJobServerDriver``) and the Flink translation, with its
  dependencies (Flink 1.19.0 client and runtime, Beam's Java SDK and Fn API runtime);
- ``beam-runners-java-job-service`` at 2.65.0, the newest version served (2.70.0 is not);
  it speaks the same job API and uses the same vendored gRPC.

Maven resolves them into ``$SML_CACHE/flink-<minor>-job-server-<version>/lib`` (3 min
and 160 MB once, cached outside the checkout). The entry point is a small jar whose
manifest names every library by absolute path, so ``java -jar`` (as Beam's Python
``FlinkRunner`` starts a job server) works, and a Flink cluster on this machine that
receives the jar loads the same libraries. That jar also carries our
:file:`runners/flink/java/.../ServerFactory.java`, compiled here: Beam's own binds every gRPC
server (job, artifact and Fn API services) to all interfaces; ours binds 127.0.0.1.

The Python SDK (2.77) talks to this 2.70 Java side through the portable job and Fn
APIs; the tests in ``tests/runners/test_flink.py`` show our pipelines give the
DirectRunner's results through it. The cluster it submits to must be Flink 1.19.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from model.cache_dir import cache_dir
from runners.tools import maven_dependencies, maven_dependency, maven_project, run_tool

ASSEMBLED_FLINK_MINOR = "1.19"
ASSEMBLED_BEAM_VERSION = "2.70.0"
ASSEMBLED_JOB_SERVICE_VERSION = "2.65.0"  # the newest beam-runners-java-job-service served
DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"
SHIM = Path(__file__).parent / "java" / "org" / "apache" / "beam" / "sdk" / "fn" / "server"
# Pinned to the runner's version: the older job service would pull 2.65 copies of these.
_PINNED = (
    "beam-sdks-java-core",
    "beam-model-pipeline",
    "beam-model-job-management",
    "beam-model-fn-execution",
    "beam-runners-java-fn-execution",
    "beam-runners-core-java",
    "beam-sdks-java-expansion-service",
)


class JobServerUnavailable(RuntimeError):
    """No Flink job server can be had here (see the message for what was tried)."""


@dataclass(frozen=True)
class JobServer:
    """A job-server jar and the Flink minor version (the cluster's) it is built for."""

    jar: Path
    flink_minor: str
    assembled: bool


def _dependency(artifact: str, version: str, extra: str = "") -> str:
    return maven_dependency("org.apache.beam", artifact, version, extra)


def pom() -> str:
    """The Maven project whose runtime dependencies are the job server."""
    managed = [_dependency(a, ASSEMBLED_BEAM_VERSION) for a in _PINNED]
    exclusion = (
        "<exclusions><exclusion><groupId>org.apache.beam</groupId>"
        "<artifactId>beam-runners-java-job-service</artifactId></exclusion></exclusions>"
    )
    runner = _dependency(
        f"beam-runners-flink-{ASSEMBLED_FLINK_MINOR}", ASSEMBLED_BEAM_VERSION, exclusion
    )
    service = _dependency("beam-runners-java-job-service", ASSEMBLED_JOB_SERVICE_VERSION)
    logging = maven_dependency("org.slf4j", "slf4j-simple", "2.0.16")
    return maven_project("flink-job-server", [runner, service, logging], managed)


def assembled_dir(cache: Path | None = None) -> Path:
    name = f"flink-{ASSEMBLED_FLINK_MINOR}-job-server-{ASSEMBLED_BEAM_VERSION}"
    return (cache or cache_dir()) / name


def assemble(cache: Path | None = None, timeout_s: float = 1200.0) -> Path:
    """The assembled job server's entry jar, built first if missing (idempotent)."""
    home = assembled_dir(cache)
    jar = home / "job-server.jar"
    if jar.is_file():
        return jar
    for tool in ("mvn", "javac", "java"):
        if shutil.which(tool) is None:
            msg = f"assembling the Flink job server needs {tool} on PATH"
            raise JobServerUnavailable(msg)
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(pom())
    lib = home / "lib"
    partial = home / f"lib.part{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    maven_dependencies(
        home / "pom.xml", partial, "resolving the job server's artifacts", timeout_s,
        JobServerUnavailable,
    )  # fmt: skip
    shutil.rmtree(lib, ignore_errors=True)
    os.replace(partial, lib)
    classes = home / "shim"
    shutil.rmtree(classes, ignore_errors=True)
    sources = sorted(str(p) for p in SHIM.glob("*.java"))
    run_tool(
        ["javac", "-nowarn", "-cp", f"{lib}/*", "-d", str(classes), *sources],
        "compiling the loopback ServerFactory",
        300.0,
        JobServerUnavailable,
    )
    _write_entry_jar(jar, classes, sorted(lib.glob("*.jar")))
    return jar


def _manifest(entries: list[str]) -> bytes:
    """A jar manifest; lines over 72 bytes continue on lines starting with a space."""
    out = []
    for entry in entries:
        raw = entry.encode()
        out.append(raw[:72])
        out += [b" " + raw[i : i + 71] for i in range(72, len(raw), 71)]
    return b"\r\n".join(out) + b"\r\n\r\n"


def _write_entry_jar(jar: Path, classes: Path, libraries: list[Path]) -> None:
    class_path = " ".join(p.resolve().as_uri() for p in libraries)
    manifest = _manifest(
        ["Manifest-Version: 1.0", f"Main-Class: {DRIVER}", f"Class-Path: {class_path}"]
    )
    partial = jar.with_suffix(f".part{os.getpid()}")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/MANIFEST.MF", manifest)
        for path in sorted(classes.rglob("*.class")):
            z.write(path, path.relative_to(classes).as_posix())
    os.replace(partial, jar)
