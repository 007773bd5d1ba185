"""Flink: job-server jar resolution, runner options, and a real local cluster."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines import main
from runners import flink
from runners.flink import FlinkSettings, FlinkUnavailable, LocalCluster, flink_args, jars
from runners.processes import accepts, pid_alive
from tests.outputs import run_and_read

ARTIFACT = "org.apache.beam:beam-runners-flink-2.2-job-server:"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SML_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_repo(root: Path, version: str) -> Path:
    name = "beam-runners-flink-2.2-job-server"
    jar = root / "org/apache/beam" / name / version / f"{name}-{version}.jar"
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"PK fake jar")
    return jar


def test_job_server_jar_is_fetched_once_into_the_cache(cache, tmp_path):
    served = fake_repo(tmp_path / "repo", "2.77.0")
    path = flink.job_server_jar(version="2.77.0", repo=(tmp_path / "repo").as_uri())
    assert path == cache / "jars" / "beam-runners-flink-2.2-job-server-2.77.0.jar"
    assert path.read_bytes() == b"PK fake jar"
    served.unlink()  # cached: the repository is not asked again
    assert flink.job_server_jar(version="2.77.0", repo=(tmp_path / "repo").as_uri()) == path
    assert not list(path.parent.glob("*.part*"))


def test_an_unavailable_job_server_names_the_artifact_and_where_to_put_it(cache, tmp_path):
    with pytest.raises(FlinkUnavailable) as err:
        flink.job_server_jar(version="2.77.0", repo=(tmp_path / "nowhere").as_uri())
    text = str(err.value)
    assert ARTIFACT + "2.77.0" in text and "Put the jar at" in text
    assert str(cache / "jars") in text
    assert not (cache / "jars" / "beam-runners-flink-2.2-job-server-2.77.0.jar").exists()


def test_runner_arguments(tmp_path):
    jar = str(tmp_path / "js.jar")
    args = flink_args(
        FlinkSettings(
            master="127.0.0.1:8081",
            parallelism=2,
            checkpointing_interval_ms=5000,
            state_backend="rocksdb",
            state_backend_path="file:///tmp/ckpt",
            job_server_jar=jar,
        )
    )
    assert "--runner=FlinkRunner" in args and "--flink_master=127.0.0.1:8081" in args
    assert "--flink_version=2.2" in args and f"--flink_job_server_jar={jar}" in args
    assert "--parallelism=2" in args and "--checkpointing_interval=5000" in args
    assert "--state_backend=rocksdb" in args
    assert "--state_backend_storage_path=file:///tmp/ckpt" in args
    assert "--environment_type=LOOPBACK" in args
    assert any("--add-opens=java.base/java.lang" in a for a in args)
    # Finite sources must shut down for a checkpointed job to end.
    assert f"--shutdown_sources_after_idle_ms={flink.IDLE_SOURCE_SHUTDOWN_MS}" in args
    # A checkpoint finishes the bundle: a splittable read's watermark moves on.
    assert "--finish_bundle_before_checkpointing" in args


def test_a_live_checkpointed_job_keeps_its_sources_and_resumes_from_a_savepoint(tmp_path):
    jar = str(tmp_path / "js.jar")
    live = FlinkSettings(checkpointing_interval_ms=1000, live=True, job_server_jar=jar)
    args = flink_args(dataclasses.replace(live, savepoint_path="file:///tmp/sp/savepoint-1"))
    # a source shut down would end every checkpoint after it: it is kept, and the job
    # runs until stopped
    assert live.keeps_sources and not any("shutdown_sources" in a for a in args)
    assert f"--max_bundle_time_mills={flink.LIVE_BUNDLE_MS}" in args  # latency: short bundles
    assert "--savepoint_path=file:///tmp/sp/savepoint-1" in args
    assert not FlinkSettings(live=True).keeps_sources  # no checkpoints: sources end
    assert FlinkSettings(master="127.0.0.1:8081").rest_url == "http://127.0.0.1:8081"
    assert FlinkSettings().rest_url is None


def test_checkpoints_on_this_machine_go_to_files():
    # Flink's default keeps checkpoints in the JobManager's memory, refusing a task's
    # state over 5 MB (the classify pipeline at 100k events/s holds more)
    local = FlinkSettings(checkpointing_interval_ms=1000).for_run(live=True)
    assert local.live and local.local_rest_port is not None
    assert local.state_backend == "hashmap" and local.state_backend_path.startswith("file:///")
    remote = FlinkSettings(master="10.0.0.5:8081", checkpointing_interval_ms=1000)
    assert remote.for_run(live=False).state_backend is None  # elsewhere: the user's choice
    chosen = FlinkSettings(
        checkpointing_interval_ms=1000, state_backend="rocksdb", state_backend_path="file:///x"
    )
    assert chosen.for_run(live=False).state_backend == "rocksdb"
    assert FlinkSettings().for_run(live=False).state_backend is None  # no checkpoints


def test_the_mini_cluster_binds_loopback_at_the_rest_port_asked(tmp_path):
    jar = str(tmp_path / "js.jar")
    args = flink_args(FlinkSettings(local_rest_port=18081, job_server_jar=jar))
    conf_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--flink_conf_dir="))
    conf = yaml.safe_load((Path(conf_dir) / "config.yaml").read_text())
    assert conf["rest.port"] == 18081 and conf["rest.bind-address"] == "127.0.0.1"
    assert conf["jobmanager.bind-host"] == conf["taskmanager.bind-host"] == "127.0.0.1"
    assert FlinkSettings(local_rest_port=18081).rest_url == "http://127.0.0.1:18081"


def test_runner_arguments_for_the_assembled_flink_1_19_job_server(tmp_path, monkeypatch):
    from runners.flink.jobserver import JobServer

    jar = tmp_path / "job-server.jar"
    monkeypatch.setattr(jars, "job_server", lambda cache=None: JobServer(jar, "1.19", True))
    settings = FlinkSettings(state_backend="hashmap", state_backend_path="file:///tmp/ckpt")
    args = flink_args(settings)
    assert "--flink_version=1.19" in args and f"--flink_job_server_jar={jar}" in args
    assert "--state_backend=filesystem" in args  # the name Beam 2.70's runner knows
    assert flink.cluster_version() == "1.19.3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parallelism": 0}, "parallelism must be > 0"),
        ({"checkpointing_interval_ms": -1}, "checkpointing interval must be > 0"),
        ({"state_backend": "memory", "state_backend_path": "x"}, "state backend must be one of"),
        ({"state_backend": "rocksdb"}, "needs a storage path"),
        ({"environment_type": "DOCKER"}, "environment must be one of"),
        ({"environment_type": "EXTERNAL"}, "EXTERNAL needs the worker pool"),
        ({"master": "localhost"}, "master must be"),
    ],
)
def test_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlinkSettings(**kwargs)


def test_main_on_flink_without_the_job_server_is_a_clear_runtime_error(
    cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SML_MAVEN_REPO", (tmp_path / "nowhere").as_uri())
    out = str(tmp_path / "out")
    code = main.main(["--runner", "FlinkRunner", "--output", out, "--events", "500", "--quiet"])
    assert code == main.EXIT_RUNTIME
    err = capsys.readouterr().err
    assert "runner unavailable" in err and ARTIFACT in err
    assert "assembling one from Maven Central failed too" in err
    assert main.main(["--runner", "FlinkRunner", "--parallelism", "0"]) == main.EXIT_USAGE
    assert "--parallelism" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                found.add(cols[1].rsplit(":", 1)[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.mark.flink
@pytest.mark.slow
def test_local_cluster_runs_on_loopback_and_stops_by_pid(tmp_path):
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    cluster = LocalCluster(tmp_path / "run", rest_port=_free_port())
    try:
        overview = cluster.start()
        assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
        assert overview["flink-version"] == cluster.version == flink.cluster_version()
        pids = cluster.pids()
        assert set(pids) == {"jobmanager", "taskmanager"}
        for pid in pids.values():
            addresses = _listening_addresses(pid)
            assert addresses and addresses <= LOOPBACK, (pid, addresses)
        if job_server_or_none() is not None:  # a pipeline submitted to this cluster
            argv = ["--pipeline", "score", "--events", "2000", "--no-streaming"]
            direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
            on_cluster = FlinkSettings(master=cluster.master)
            submitted = run_and_read("FlinkRunner", argv, tmp_path / "flink", flink=on_cluster)
            assert submitted == direct
            assert cluster.status()["jobs-finished"] == 1
        # A killed TaskManager is gone by PID; a new one joins the same cluster.
        killed = cluster.kill("taskmanager")
        deadline = time.monotonic() + 10
        while pid_alive(killed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(killed)
        fresh = cluster.start_taskmanager()
        assert fresh != killed and cluster.pids()["taskmanager"] == fresh
        assert cluster.wait_for_taskmanagers(1, 60)["slots-total"] >= 2
        assert list((tmp_path / "run" / "log").glob("*taskexecutor*.log"))
    finally:
        cluster.stop()
    assert cluster.pids() == {} and cluster.status() is None
    assert not any(pid_alive(p) for p in pids.values())


def test_a_standby_taskmanager_is_named_and_outlives_the_one_killed(tmp_path):
    # spare slots for fast failover: each TaskManager carries its id on its command
    # line, which is how kill() finds the PID of one that runs tasks
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    cluster = LocalCluster(tmp_path / "run", rest_port=_free_port(), standby=1)
    try:
        overview = cluster.start()
        assert overview["taskmanagers"] == 2 and overview["slots-total"] == 4
        with urllib.request.urlopen(cluster.rest_url + "/taskmanagers", timeout=5) as r:
            ids = {m["id"] for m in json.load(r)["taskmanagers"]}
        assert ids == {"taskmanager-1", "taskmanager-2"}
        killed = cluster.kill("taskmanager")
        deadline = time.monotonic() + 10
        while pid_alive(killed) and time.monotonic() < deadline:
            time.sleep(0.1)
        while (cluster.status() or {}).get("taskmanagers") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cluster.status()["taskmanagers"] == 1 and cluster.pids()["taskmanager"] != killed
    finally:
        cluster.stop()
    assert cluster.pids() == {}


def job_server_or_none():
    try:
        return flink.job_server()
    except FlinkUnavailable:
        return None


@pytest.fixture(scope="module")
def job_server():
    try:
        return flink.job_server()
    except FlinkUnavailable as err:
        pytest.skip(str(err))


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--pipeline", "score", "--no-streaming"],
        ["--pipeline", "score", "--streaming"],
        ["--pipeline", "classify", "--no-streaming"],
        ["--pipeline", "classify", "--mode", "coupled", "--streaming", "--late-fraction", "0"],
    ],
    ids=["score-bounded", "score-teststream", "decoupled-bounded", "coupled-teststream"],
)
def test_pipelines_on_flink_match_the_direct_runner(job_server, tmp_path, extra):
    """Same predictions per event_id and the same model versions on both runners; the
    streaming variants replay through TestStream (bytes elements, a standard coder).

    Online learning on a replay is compared without late events: Flink holds a
    watermark back while a bundle is open, so an element the replay sends after a
    watermark can reach the learner before that watermark does. What is late then
    differs between the runners, and so do the learner's steps (both stay leak-free)."""
    argv = ["--events", "3000", *extra]
    direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
    on_flink = run_and_read("FlinkRunner", argv, tmp_path / "flink", flink=FlinkSettings())
    assert len(direct) == 3000 and on_flink == direct
    if "classify" in extra:
        assert len({v for _, _, v in on_flink}) > 1  # versions reached the scorer


@pytest.mark.flink
@pytest.mark.slow
def test_events_whose_window_expired_are_dead_lettered_on_flink_too(job_server, tmp_path):
    """With no allowed lateness the replay's late events expire: on Flink, as on the
    DirectRunner, each is a dead letter (runners encode the dead letters, so their
    PCollections must declare the windows they carry) and the rest are scored."""
    from transforms.io import read_jsonl_dir

    argv = ["--pipeline", "score", "--streaming", "--events", "3000", "--allowed-lateness", "0"]
    direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
    on_flink = run_and_read("FlinkRunner", argv, tmp_path / "flink", flink=FlinkSettings())
    dead = read_jsonl_dir(str(tmp_path / "flink" / "dead_letter"))
    assert on_flink == direct and len(direct) < 3000
    assert sum(d["rows"] for d in dead) == 3000 - len(direct)
    assert {d["stage"] for d in dead} == {"windowing"}


def test_stale_pid_files_never_point_stop_at_someone_else(tmp_path):
    import os
    import subprocess

    cluster = LocalCluster(tmp_path / "run", rest_port=_free_port())
    (tmp_path / "run" / "pids").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        # A PID file left by a crash, whose PID now belongs to an unrelated process.
        (tmp_path / "run" / "pids" / "flink-x-taskexecutor.pid").write_text(f"{bystander.pid}\n")
        (tmp_path / "run" / "pids" / "flink-x-standalonesession.pid").write_text(f"{os.getpid()}\n")
        assert cluster.pids() == {}
        cluster.stop()
        assert bystander.poll() is None  # still running
        with pytest.raises(FlinkUnavailable, match="no live taskmanager"):
            cluster.kill("taskmanager")
    finally:
        bystander.kill()
        bystander.wait()


def test_start_refuses_a_taken_rest_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalCluster(tmp_path / "run", rest_port=port)
        if shutil.which("java") is None:
            pytest.skip("no java on PATH")
        with pytest.raises(FlinkUnavailable, match=f"port {port} on 127.0.0.1 is taken"):
            cluster.start()


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["score", "classify"])
def test_pipelines_through_the_portable_job_api_match_the_direct_runner(tmp_path, pipeline):
    """The portable path Flink's job server serves (pipeline protos, the job API, a
    LOOPBACK worker, state and timers over the Fn API), here with Beam's in-process
    job service: the same predictions and model versions as the DirectRunner."""
    argv = ["--pipeline", pipeline, "--events", "3000", "--no-streaming"]
    direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
    portable = run_and_read("PortableRunner", argv, tmp_path / "portable")
    assert len(direct) == 3000 and portable == direct
    if pipeline == "classify":
        assert len({v for _, _, v in portable}) > 1  # versions reached the scorer


@pytest.mark.slow
def test_external_environment_runs_python_workers_in_our_worker_pool(tmp_path):
    """--environment-type EXTERNAL: the SDK workers run in a worker pool we start on
    127.0.0.1 and stop by PID, with the DirectRunner's predictions."""
    from runners.flink import WorkerPool

    pool = WorkerPool(_free_port(), tmp_path / "pool.log")
    pool.start()
    try:
        assert pool.process is not None
        pid = pool.process.pid
        addresses = _listening_addresses(pid)
        assert addresses and addresses <= LOOPBACK, addresses
        argv = ["--pipeline", "score", "--events", "2000", "--no-streaming"]
        direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
        external = FlinkSettings(environment_type="EXTERNAL", environment_config=pool.address)
        pooled = run_and_read("PortableRunner", argv, tmp_path / "pooled", flink=external)
        assert pooled == direct
        assert "starting SDK worker" in (tmp_path / "pool.log").read_text()
    finally:
        pool.stop()
    assert not pid_alive(pid)


@pytest.mark.flink
@pytest.mark.slow
def test_the_job_server_listens_on_loopback_only(job_server, tmp_path):
    """Beam's Java servers bind every interface; the assembled job server's own
    ServerFactory binds its job, artifact and expansion services to 127.0.0.1."""
    import subprocess

    if not job_server.assembled:
        pytest.skip("Beam's published job server binds all interfaces")
    port = _free_port()
    cmd = ["java", *flink.JAVA17_OPENS, "-jar", str(job_server.jar), "--flink-master=[local]"]
    cmd += [f"--job-port={port}", "--artifact-port=0", "--expansion-port=0"]
    cmd += [f"--artifacts-dir={tmp_path / 'artifacts'}"]
    with open(tmp_path / "job-server.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not accepts(port) and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "job-server.log").read_text()[-2000:]
            time.sleep(0.2)
        addresses = _listening_addresses(server.pid)
        assert len(addresses) >= 1 and addresses <= LOOPBACK, addresses
        # Our ServerFactory names the loopback address it bound (Beam's would say localhost).
        assert (
            "ArtifactStagingService started on 127.0.0.1:"
            in (tmp_path / "job-server.log").read_text()
        )
    finally:
        server.kill()
        server.wait()


def test_flink_figures_read_as_summary_lines():
    from runners.flink.rest import JobFigures

    figures = JobFigures("abc", state="FINISHED", restarts=2, checkpoints_completed=8,
                         checkpoints_failed=1, restored=2, last_checkpoint_ms=120,
                         last_checkpoint_bytes=83_704, max_checkpoint_ms=5_420,
                         backpressure={"Source": 0.05, "Online": 0.4})  # fmt: skip
    lines = figures.lines()
    assert lines[0] == "flink job        abc  (FINISHED, 2 restarts)"
    assert (
        "8  completed, 1 failed, 2 restored; last 120 ms, 83,704 bytes; longest 5420 ms" in lines[1]
    )
    assert lines[2].startswith("backpressure     0.40 (Online)")
    assert "none completed" in JobFigures("x").lines()[1]
