"""Live queries of a running pipeline, and a live dashboard (``--serve-port P``).

An HTTP server on 127.0.0.1 (never another interface; requests must name 127.0.0.1
or localhost as their Host, so a web page cannot reach it through DNS rebinding),
started with the run and stopped with it, answers from the state the run holds in this process (the
progress taps, :mod:`pipelines.progress`, and the live board, :mod:`model.live`):

- ``GET /api/state``: events read and scored, events/s, the watermark and its lag,
  the newest model version, drift alarms, and (recommend) the live model's position
  and ids; ``samples=N``: also the last N progress samples (the dashboard's curve);
- ``GET /api/topk?user=U&k=10``: the user's best unseen items from the live
  embeddings (recommend);
- ``GET /api/predict?user=U&item=I``: a rating prediction from the live embeddings;
- ``POST /api/predict`` with ``{"features": [[...], ...]}`` (and ``"key"`` for per-key
  models): classes and probabilities from the newest model version scoring in this
  run (score and classify);
- ``GET /api/model``: the newest model version and how many features it takes;
- ``GET /api/keys?key=K``: the key's events, labelled events and accuracy in each of
  its latest windows; without ``key``, the busiest keys;
- ``GET /``: the dashboard, a page that polls ``/api/state`` (and a user's top-k)
  and redraws throughput, watermark lag, versions and alarms while the job runs.

Every answer carries ``position_us`` (the newest event time the state learnt from,
in arrival order) and ``watermark_us`` (the source's). ``min_position_us=T`` asks
for a state that has reached event time T: the answer waits up to ``wait_s``
(default 0: fail fast) and otherwise is a ``409`` saying where the state is. A bad
query is a ``400`` with the reason, an unknown path a ``404``, never a crash.
Connections are kept alive (HTTP/1.1; closed after ``IDLE_S`` idle, when a request
body is left unread, and when the run ends), and each answer leaves in one write. Live
queries need the state in this process: ``--serve-port`` takes the DirectRunner
(on Flink or Prism the state lives in their workers; it is refused there).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from model.live import BOARD, LIVE_MODEL, LiveBoard
from pipelines.progress import Progress

RECOMMEND = "recommend"
MAX_K = 1000
MAX_BODY = 1 << 20  # bytes a POSTed query may have
MAX_ROWS = 10_000  # rows one POSTed prediction may ask for
IDLE_S = 10.0  # seconds a kept-alive connection may stay idle


class QueryError(Exception):
    """A query the server answers with ``status`` and ``reason``."""

    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


class LiveServer:
    """The HTTP server of one run; :meth:`start` / :meth:`stop` (by the run)."""

    def __init__(self, port: int, progress: Progress, *, board: LiveBoard = BOARD,
                 pipeline: str = "") -> None:  # fmt: skip
        if not 0 <= port <= 65535:
            msg = f"port must be in 0..65535, got {port!r}"
            raise ValueError(msg)
        self.progress, self.board, self.pipeline = progress, board, pipeline
        self._handlers: dict[tuple[str, int], Any] = {}
        self._handlers_lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # open ones, closed by stop()
        self._connections_lock = threading.Lock()
        self._stopped = False
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="serve",
                                        kwargs={"poll_interval": 0.1}, daemon=True)  # fmt: skip

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}/"

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No new connection, and the kept-alive ones closed: nothing is answered
        from a run that has ended."""
        self._server.shutdown()
        self._server.server_close()
        with self._connections_lock:
            self._stopped = True
            for connection in self._connections:
                _close(connection)
        self._thread.join(timeout=5)

    def _opened(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if not open_:
                self._connections.discard(connection)
            elif self._stopped:  # accepted as the server stopped
                _close(connection)
            else:
                self._connections.add(connection)

    # -- the answers ----------------------------------------------------------------
    def state(self, query: dict[str, str]) -> dict[str, Any]:
        name = RECOMMEND if self.board.get(RECOMMEND) is not None else LIVE_MODEL
        entry = self._entry(query, required=False, name=name)
        p = self.progress
        with p.lock:
            elapsed = max(1e-9, time.perf_counter() - p.started)
            out: dict[str, Any] = {
                "pipeline": self.pipeline,
                "events_in": p.events_in,
                "scored": p.scored,
                "events_per_s": round(p.scored / elapsed, 1),
                "watermark_us": p.watermark_us,
                "watermark_lag_s": p.lag_s(),
                "model_version": p.model_version,
                "drift_alarms": len(p.drift_alarms),
            }
            samples = _integer(query, "samples", 0, 0, 1000)  # the dashboard's curve
            if samples:
                out["samples"] = p.samples[-samples:]
        if entry is not None:
            out["model_version"] = max(out["model_version"], entry.version)
            if name == RECOMMEND:  # counts only: read without waiting for the step
                ids = {"users": entry.value.users.ids, "items": entry.value.items.ids}
                out["ids"] = {side: {"distinct": t.distinct, "rows": t.size,
                                     "collisions": t.collisions}
                              for side, t in ids.items()}  # fmt: skip
        out["position_us"] = None if entry is None else entry.position_us
        return out

    def topk(self, query: dict[str, str]) -> dict[str, Any]:
        user = _required(query, "user")
        k = _integer(query, "k", 10, 1, MAX_K)
        entry = self._entry(query, required=True)
        assert entry is not None
        with entry.lock:
            items = entry.value.top_k(user, k)
        return {"user": user, "k": k, "items": [{"item": i, "score": round(s, 4)}
                                                for i, s in items],
                **self._position(entry)}  # fmt: skip

    def predict(self, query: dict[str, str]) -> dict[str, Any]:
        user, item = _required(query, "user"), _required(query, "item")
        entry = self._entry(query, required=True)
        assert entry is not None
        with entry.lock:
            (value,) = entry.value.predict([user], [item])
        return {"user": user, "item": item, "prediction": round(float(value), 4),
                **self._position(entry)}  # fmt: skip

    def predict_features(self, query: dict[str, str], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "features" not in body:
            raise QueryError(400, 'the body must be a JSON object with "features"')
        rows = body["features"]
        if not isinstance(rows, list) or not rows or len(rows) > MAX_ROWS:
            raise QueryError(400, f"features must be a list of 1..{MAX_ROWS} rows")
        try:
            x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise QueryError(400, "features must be rows of numbers, all of one length") from None
        if x.ndim != 2 or not np.isfinite(x).all():
            raise QueryError(400, "features must be rows of finite numbers, all of one length")
        key = body.get("key")
        name = LIVE_MODEL if key is None else f"{LIVE_MODEL}/{key}"
        entry = self._entry(query, required=True, name=name)
        artifact = entry.value
        handler = self._handler(name, artifact)
        width = _width(handler)
        if width is not None and x.shape[1] != width:
            raise QueryError(400, f"the model takes {width} features, got {x.shape[1]}")
        prediction, score = handler.predict(x)
        return {"predictions": prediction.tolist(),
                "scores": [round(float(v), 6) for v in score], **self._position(entry)}  # fmt: skip

    def model(self, query: dict[str, str]) -> dict[str, Any]:
        name = LIVE_MODEL if "key" not in query else f"{LIVE_MODEL}/{query['key']}"
        entry = self._entry(query, required=True, name=name)
        return {"features": _width(self._handler(name, entry.value)), **self._position(entry)}

    def keys(self, query: dict[str, str]) -> dict[str, Any]:
        key = query.get("key")
        limit = _integer(query, "limit", 20, 1, 1000)
        with self.progress.lock:
            if key is None:
                events = {k: sum(c[0] for c in w.values()) for k, w in self.progress.keys.items()}
                busiest = sorted(events, key=lambda k: -events[k])[:limit]
                return {"keys": [{"key": k, "events": events[k]} for k in busiest],
                        "watermark_us": self.progress.watermark_us}  # fmt: skip
            windows = self.progress.keys.get(key)
            if windows is None:
                raise QueryError(404, f"no events of key {key!r} scored yet")
            rows = [{"window_start_us": start, "events": n, "labelled": lab,
                     "accuracy": round(ok / lab, 4) if lab else None}
                    for start, (n, lab, ok) in sorted(windows.items())]  # fmt: skip
            return {"key": key, "windows": rows, "watermark_us": self.progress.watermark_us}

    def _handler(self, name: str, artifact: Any) -> Any:
        from model.handler import TorchModelHandler

        key = (name, artifact.version)  # per-key models number their versions alike
        with self._handlers_lock:
            handler = self._handlers.get(key)
            if handler is None:
                handler = TorchModelHandler(artifact, "cpu")
                self._handlers[key] = handler
                while len(self._handlers) > 16:  # the latest few
                    del self._handlers[next(iter(self._handlers))]
            return handler

    def _entry(self, query: dict[str, str], *, required: bool, name: str = RECOMMEND) -> Any:
        minimum = _integer(query, "min_position_us", None, -(2**62), 2**62)
        wait_s = _number(query, "wait_s", 0.0, 0.0, 30.0)
        if self.board.get(name) is None and not required and minimum is None:
            return None
        if self.board.get(name) is None and not wait_s:
            what = "live model" if name == RECOMMEND else "model version"
            raise QueryError(404, f"no {what} in this run yet ({name!r})")
        entry = self.board.wait_for(name, min_position_us=minimum, timeout_s=wait_s)
        if entry is None:
            now = self.board.get(name)
            raise QueryError(409, "the state has not reached min_position_us yet",
                             position_us=None if now is None else now.position_us)  # fmt: skip
        return entry

    def _position(self, entry: Any) -> dict[str, Any]:
        with self.progress.lock:
            watermark = self.progress.watermark_us
        return {"position_us": entry.position_us, "model_version": entry.version,
                "watermark_us": watermark}  # fmt: skip


def _width(handler: Any) -> int | None:
    """The number of features the handler's module takes (its first layer's input)."""
    for module in handler.module.modules():
        if hasattr(module, "in_features"):
            return int(module.in_features)
    return None


def _required(query: dict[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise QueryError(400, f"missing query parameter {name!r}")
    return value


def _integer(query: dict[str, str], name: str, default: int | None, lo: int, hi: int) -> Any:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise QueryError(400, f"{name} must be an integer, got {query[name]!r}") from None
    if not lo <= value <= hi:
        raise QueryError(400, f"{name} must be in {lo}..{hi}, got {value}")
    return value


def _number(query: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    if name not in query:
        return default
    try:
        value = float(query[name])
    except ValueError:
        raise QueryError(400, f"{name} must be a number, got {query[name]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise QueryError(400, f"{name} must be in {lo}..{hi}, got {query[name]!r}")
    return value


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def _handler(server: LiveServer) -> type[BaseHTTPRequestHandler]:
    routes = {"/api/state": server.state, "/api/topk": server.topk,
              "/api/predict": server.predict, "/api/keys": server.keys,
              "/api/model": server.model}  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive: a dashboard polls
        unread = False  # a request body left unread (the connection is then closed)
        timeout = IDLE_S  # an idle kept-alive connection is closed (its thread ends)
        disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

        def setup(self) -> None:
            super().setup()
            server._opened(self.connection, True)

        def finish(self) -> None:
            server._opened(self.connection, False)
            super().finish()

        def _trusted_host(self) -> bool:
            """Only a page served from this address may read it (no DNS rebinding)."""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if host in ("127.0.0.1", "localhost"):
                return True
            self._json(403, {"error": f"Host {host!r} refused: use 127.0.0.1 or localhost"})
            return False

        def do_GET(self) -> None:  # noqa: N802 (the http.server protocol)
            # a GET's body is never read: with one, the connection cannot be reused
            self.unread = "Transfer-Encoding" in self.headers or (
                self.headers.get("Content-Length") or "0"
            ).strip() not in ("", "0")
            if not self._trusted_host():
                return
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):
                self._send(200, DASHBOARD.encode(), "text/html; charset=utf-8")
                return
            route = routes.get(url.path)
            try:
                if route is None:
                    raise QueryError(404, f"no such path {url.path!r}; try /api/state")
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self._json(200, route(query))
            except QueryError as err:
                self._json(err.status, {"error": err.reason, **err.extra})
            except Exception as err:  # a query never takes the run down
                self._json(500, {"error": f"internal error ({type(err).__name__})"})

        def do_POST(self) -> None:  # noqa: N802 (the http.server protocol)
            self.unread = True  # until the body is read
            if not self._trusted_host():
                return
            url = urlparse(self.path)
            try:
                if url.path != "/api/predict":
                    raise QueryError(404, f"no such path {url.path!r} to POST to")
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    raise QueryError(411, "a POST needs a Content-Length") from None
                if length < 0:
                    raise QueryError(400, f"Content-Length must be >= 0, got {length}")
                if length > MAX_BODY:
                    raise QueryError(413, f"the body may have {MAX_BODY} bytes at most")
                data = self.rfile.read(length)
                self.unread = False
                try:
                    body = json.loads(data or b"null")
                except json.JSONDecodeError as err:
                    raise QueryError(400, f"the body is not JSON: {err}") from None
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self._json(200, server.predict_features(query, body))
            except QueryError as err:
                self._json(err.status, {"error": err.reason, **err.extra})
            except Exception as err:  # a query never takes the run down
                self._json(500, {"error": f"internal error ({type(err).__name__})"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, data: bytes, kind: str) -> None:
            """The whole answer in one write (one syscall, one packet); the connection
            stays open unless the client asked to close it or a body is left unread."""
            close = self.close_connection or self.unread
            lines = [
                f"{self.protocol_version} {status} {self.responses[status][0]}",
                f"Server: {self.version_string()}",
                f"Date: {self.date_time_string()}",
                f"Content-Type: {kind}",
                f"Content-Length: {len(data)}",
                "Cache-Control: no-store",
                *(["Connection: close"] if close else []),
            ]
            head = "\r\n".join([*lines, "", ""])
            self.close_connection = close
            self.wfile.write(head.encode("latin-1") + data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return Handler


DASHBOARD = """<!doctype html>
<html><head><meta charset="utf-8"><title>Live pipeline</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222}
.grid{display:grid;grid-template-columns:repeat(4,200px);gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:10px}
.card b{display:block;font-size:28px}
#spark{border:1px solid #ccc;margin-top:12px}
</style></head>
<body><h1>Live pipeline <span id="pipeline"></span></h1>
<div class="grid">
<div class="card">events scored<b id="scored">-</b></div>
<div class="card">events/s<b id="rate">-</b></div>
<div class="card">watermark lag (s)<b id="lag">-</b></div>
<div class="card">model version<b id="version">-</b></div>
<div class="card">drift alarms<b id="alarms">-</b></div>
<div class="card">state position<b id="position">-</b></div>
</div>
<svg id="spark" width="800" height="120"></svg>
<h2>Top items for <input id="user" value="u0" size="10"></h2>
<ol id="topk"></ol>
<script>
const fmt = (v) => v === null || v === undefined ? "-" : v.toLocaleString();
function when(us) { return us === null ? "-" : new Date(us / 1000).toISOString().slice(0, 19); }
async function tick() {
  try {
    const s = await (await fetch("/api/state?samples=120", {cache: "no-store"})).json();
    document.getElementById("pipeline").textContent = s.pipeline;
    document.getElementById("scored").textContent = fmt(s.scored);
    document.getElementById("rate").textContent = fmt(Math.round(s.events_per_s));
    document.getElementById("lag").textContent =
      s.watermark_lag_s === null ? "-" : s.watermark_lag_s.toFixed(1);
    document.getElementById("version").textContent = fmt(s.model_version);
    document.getElementById("alarms").textContent = fmt(s.drift_alarms);
    document.getElementById("position").textContent = when(s.position_us);
    const pts = s.samples.map((x, i) => [i, x.events_per_s || 0]);
    const top = Math.max(1, ...pts.map((p) => p[1]));
    const path = pts.map((p) => `${p[0] * 800 / Math.max(1, pts.length - 1)},` +
                                `${115 - p[1] * 110 / top}`).join(" ");
    document.getElementById("spark").innerHTML =
      `<polyline fill="none" stroke="#1f77b4" points="${path}"/>`;
    if (s.position_us !== null) {
      const user = encodeURIComponent(document.getElementById("user").value);
      const r = await fetch(`/api/topk?user=${user}&k=10`, {cache: "no-store"});
      if (r.ok) {
        const t = await r.json();
        const list = document.getElementById("topk");
        list.replaceChildren(...t.items.map((x) => {
          const li = document.createElement("li");
          li.textContent = `${x.item} (${x.score})`;  // ids are data: never markup
          return li;
        }));
      }
    }
  } catch (e) { /* the run may be ending */ }
}
tick(); setInterval(tick, 500);
</script></body></html>
"""
