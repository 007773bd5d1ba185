"""Live queries and the dashboard: answers from live state, bounded staleness,
4xx for bad queries, 127.0.0.1 only, stopped with the run, numbers that move."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from model.live import LiveBoard
from model.reco.mf import MFConfig, StreamingMF
from pipelines import main
from pipelines.cli import config_from_args, parse_args
from pipelines.progress import Progress
from pipelines.serve import LiveServer


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served():
    board, progress = LiveBoard(), Progress()
    mf = StreamingMF(MFConfig(seed=0))
    mf.predict_learn(["ann", "ann", "bob", "bob"], ["a", "b", "b", "c"], [5.0, 4.0, 2.0, 5.0])
    board.publish("recommend", mf, position_us=1_000, version=mf.learned)
    server = LiveServer(0, progress, board=board, pipeline="recommend").start()
    yield server, board, progress, mf
    server.stop()


def test_answers_come_from_the_live_state(served) -> None:
    server, board, progress, mf = served
    with progress.lock:
        progress.scored, progress.watermark_us = 4, 900
    status, state = _get(server.url + "api/state")
    assert status == 200 and state["scored"] == 4 and state["position_us"] == 1_000
    assert state["ids"]["users"] == {"distinct": 2, "rows": 2, "collisions": 0}
    status, top = _get(server.url + "api/topk?user=ann&k=5")
    assert status == 200 and [x["item"] for x in top["items"]] == ["c"]  # a, b rated
    assert top["position_us"] == 1_000 and top["watermark_us"] == 900
    status, pred = _get(server.url + "api/predict?user=ann&item=c")
    assert status == 200 and pred["prediction"] == pytest.approx(
        float(mf.predict(["ann"], ["c"])[0]), abs=1e-3
    )


def test_a_minimum_position_waits_or_fails_fast(served) -> None:
    server, board, _, _ = served
    status, body = _get(server.url + "api/topk?user=ann&min_position_us=5000")
    assert status == 409 and body["position_us"] == 1_000  # fail fast: wait_s=0
    threading.Timer(0.3, lambda: board.advance("recommend", 6_000)).start()
    start = time.monotonic()
    status, body = _get(server.url + "api/topk?user=ann&min_position_us=5000&wait_s=5")
    assert status == 200 and body["position_us"] == 6_000
    assert 0.2 < time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("api/topk", 400, "missing query parameter 'user'"),
        ("api/topk?user=ann&k=0", 400, "k must be in"),
        ("api/topk?user=ann&k=ten", 400, "k must be an integer"),
        ("api/predict?user=ann", 400, "missing query parameter 'item'"),
        ("api/state?wait_s=nan", 400, "wait_s must be in"),
        ("api/nothing", 404, "no such path"),
    ],
)
def test_bad_queries_get_a_4xx_with_the_reason(served, path, status, reason) -> None:
    server = served[0]
    got, body = _get(server.url + path)
    assert got == status and reason in body["error"]
    assert _get(server.url + "api/state")[0] == 200  # still serving


def test_it_binds_the_loopback_interface_only(served) -> None:
    import socket

    server = served[0]
    assert server.address[0] == "127.0.0.1"
    outward = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    outward.discard("127.0.0.1")
    for address in outward - {a for a in outward if a.startswith("127.")}:
        with pytest.raises(OSError), socket.create_connection((address, server.address[1]), 2):
            pass


def test_other_hosts_and_bad_bodies_are_refused(served) -> None:
    import http.client

    server = served[0]
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", "/api/state", headers={"Host": "evil.example:80"})
    answer = conn.getresponse()
    assert answer.status == 403 and b"refused" in answer.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Length", "-1")
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 400 and b"Content-Length" in answer.read()
    conn.close()


def test_a_connection_is_kept_alive_and_closed_after_a_refusal(served) -> None:
    import http.client

    server = served[0]
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    ports = set()
    for path in ("/api/state", "/api/topk?user=ann", "/api/predict?user=bob&item=a"):
        conn.request("GET", path)
        answer = conn.getresponse()
        assert answer.status == 200 and not answer.will_close
        json.loads(answer.read())
        ports.add(conn.sock.getsockname()[1])  # the same connection each time
    assert len(ports) == 1
    conn.putrequest("POST", "/api/nowhere")  # refused before its body is read
    conn.putheader("Content-Length", "5")
    conn.endheaders(b"12345")
    answer = conn.getresponse()
    assert answer.status == 404 and answer.will_close and b"no such path" in answer.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", "/api/state", body=b"GET /api/state HTTP/1.1\r\n\r\n")
    answer = conn.getresponse()  # a GET's body is never read: not a second request
    assert answer.status == 200 and answer.will_close
    json.loads(answer.read())
    conn.close()


def test_kept_alive_connections_are_closed_when_the_run_ends(served) -> None:
    import http.client

    server = served[0]
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", "/api/state")
    assert conn.getresponse().read()
    server.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/api/state")
        conn.getresponse()
    conn.close()


def test_serving_needs_the_state_in_this_process(tmp_path) -> None:
    from pipelines.cli import UsageError

    with pytest.raises(UsageError, match="--serve-port"):
        config_from_args(parse_args(["--runner", "FlinkRunner", "--serve-port", "0",
                                     "--output", str(tmp_path)]))  # fmt: skip


def test_the_server_runs_with_the_pipeline_and_stops_with_it(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config_from_args(parse_args([
        "--pipeline", "recommend", "--events", "600000", "--serve-port", str(port),
        "--output", str(tmp_path / "out")]))  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    answers: list[tuple[int, dict]] = []

    def query() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, state = _get(url + "api/state")
            except OSError:
                time.sleep(0.05)
                continue
            if state.get("position_us") is not None:
                answers.append((status, state))
                answers.append(_get(url + "api/topk?user=u1&k=3"))
                return
            time.sleep(0.02)

    asker = threading.Thread(target=query)
    asker.start()
    summary = main.run(cfg, show_progress=False)
    asker.join(60)
    assert summary.balanced and answers, "no live answer while the run lasted"
    assert answers[0][0] == 200 and answers[1][0] == 200 and len(answers[1][1]["items"]) == 3
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "api/state", timeout=2)


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_browser() is None, reason="no Chromium (apt-get install chromium)")
def test_the_dashboard_loads_and_its_numbers_move(served, tmp_path) -> None:
    server, board, progress, mf = served

    def dom() -> str:
        done = subprocess.run(
            [_browser(), "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=3000", "--dump-dom", server.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return done.stdout

    def shot(path) -> bytes:
        subprocess.run(
            [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=900,700", "--virtual-time-budget=3000", f"--screenshot={path}",
             server.url],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        return path.read_bytes()

    with progress.lock:
        progress.scored = 1234
    first = dom()
    assert 'id="scored">1,234<' in first
    assert "<li>c (" in first  # the page asks for u0, unknown here: items by bias
    before = shot(tmp_path / "a.png")
    with progress.lock:
        progress.scored, progress.model_version = 98765, 7
    second = dom()
    assert 'id="scored">98,765<' in second and 'id="version">7<' in second
    after = shot(tmp_path / "b.png")
    assert before[:8] == after[:8] == b"\x89PNG\r\n\x1a\n" and before != after


def _post(url: str, body: object) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served_model():
    import numpy as np

    from model import batch as mb
    from model.artifact import ModelArtifact
    from model.handler import TorchModelHandler
    from model.mlp import MLPClassifier
    from pipelines.progress import _count_keys

    board, progress = LiveBoard(), Progress(window_us=10_000_000)
    artifact = ModelArtifact.from_module(MLPClassifier(3, seed=0), 4)
    board.publish("model", artifact, position_us=7_000, version=4)
    batch = mb.make_batch(["a", "a", "b"], np.array([1, 2, 12_000_000]),
                          np.zeros((3, 3), np.float32), labels=[0, 1, 1])  # fmt: skip
    _count_keys(progress, batch, np.array([0, 1, 1]), np.array([True, False, True]))
    server = LiveServer(0, progress, board=board, pipeline="classify").start()
    yield server, TorchModelHandler(artifact, "cpu")
    server.stop()


def test_posted_features_are_scored_by_the_newest_version(served_model) -> None:
    server, handler = served_model
    rows = [[0.1, 0.2, 0.3], [-1.0, 2.0, 0.5]]
    assert _get(server.url + "api/model") == (
        200,
        {"features": 3, "position_us": 7_000, "model_version": 4, "watermark_us": None},
    )
    status, body = _post(server.url + "api/predict", {"features": rows})
    assert status == 200 and body["model_version"] == 4 and body["position_us"] == 7_000
    pred, score = handler.predict(np.asarray(rows, np.float32))
    assert body["predictions"] == pred.tolist()
    assert body["scores"] == pytest.approx(score.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"rows": []}, 'with "features"'),
        ({"features": [[1, 2]]}, "takes 3 features"),
        ({"features": [[1, 2, 3], [1]]}, "all of one length"),
        ({"features": [[1, 2, "x"]]}, "numbers"),
        ({"features": [[1, 2, float("inf")]]}, "finite"),
    ],
)
def test_bad_posted_features_are_a_400(served_model, body, reason) -> None:
    status, answer = _post(served_model[0].url + "api/predict", body)
    assert status == 400 and reason in answer["error"]


def test_key_window_stats(served_model) -> None:
    server = served_model[0]
    status, body = _get(server.url + "api/keys?key=a")
    assert status == 200
    assert body["windows"] == [{"window_start_us": 0, "events": 2, "labelled": 2,
                                "accuracy": 0.5}]  # fmt: skip
    status, body = _get(server.url + "api/keys")
    assert [k["key"] for k in body["keys"]] == ["a", "b"]
    assert _get(server.url + "api/keys?key=zz")[0] == 404


@pytest.mark.slow
def test_a_classify_run_answers_posted_features_and_key_stats(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "out")
    cfg = config_from_args(
        parse_args(["--events", "60000", "--serve-port", str(port), "--output", out])
    )
    url = f"http://127.0.0.1:{port}/"
    answers: dict[str, tuple[int, dict]] = {}

    def query() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(answers) < 2:
            try:
                status, model = _get(url + "api/model")
                if status != 200:
                    time.sleep(0.05)
                    continue
                width = model["features"]
                status, body = _post(url + "api/predict", {"features": [[0.0] * width]})
                if status == 200:
                    answers["predict"] = (status, body)
                    keys = _get(url + "api/keys")
                    if keys[0] == 200 and keys[1]["keys"]:  # the tap may not have counted yet
                        answers["keys"] = keys
            except OSError:
                pass
            time.sleep(0.05)

    asker = threading.Thread(target=query)
    asker.start()
    summary = main.run(cfg, show_progress=False)
    asker.join(120)
    assert summary.balanced and "predict" in answers, "no live answer while the run lasted"
    status, body = answers["predict"]
    assert body["model_version"] >= 1 and body["predictions"][0] in (0, 1)
    assert answers["keys"][0] == 200 and answers["keys"][1]["keys"]
