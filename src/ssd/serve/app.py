"""The FastAPI app of `ssd serve`: detection, health, model description, metrics and the web page.

Routes:
  POST /v1/detect   a picture (multipart field `image`, or the raw body); `score`, `classes`, `max_det` as
                    query or form fields -> {"detections": [{"box", "label", "name", "score"}], "width",
                    "height", "model", "time_ms"}, boxes [x1, y1, x2, y2] in the picture's own pixels
  GET  /health      readiness: 200 once the model is loaded, 503 before (or if it could not be loaded)
  GET  /health/live liveness: 200 whenever the process answers
  GET  /v1/model    classes, input size, backend, precision, batching settings
  GET  /metrics     Prometheus text
  GET  /            the web page (files under page/, nothing fetched from elsewhere)
Every error is JSON `{"error": "..."}` with a 4xx status naming the problem (5xx only for a fault of ours,
whose traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ssd.deploy.loading import describe_detector, load_detector
from ssd.deploy.selection import select_detections
from ssd.device import choose_device
from ssd.errors import UserError
from ssd.evaluation.drawing import class_name
from ssd.evaluation.palette import class_colour
from ssd.serve.batcher import MicroBatcher
from ssd.serve.metrics import CONTENT_TYPE, ServerMetrics
from ssd.serve.settings import ServeSettings
from ssd.serve.uploads import RequestError, decode_picture, read_detect_request

PAGE = Path(__file__).parent / "page"


class ServerState:
    """The model and its batcher, loaded once per process; `ready` says whether requests can be served."""

    def __init__(self, settings: ServeSettings, detector=None, on_batch=None):
        self.settings = settings
        self.detector = detector
        self.failure: str | None = None
        self.description: dict[str, Any] = {}
        self.batcher = MicroBatcher(self._predict, settings.max_batch, settings.max_wait_ms / 1000, on_batch)
        if detector is not None:
            self._describe()

    @property
    def ready(self) -> bool:
        return self.detector is not None

    def load(self) -> None:
        settings = self.settings
        try:
            self.detector = load_detector(
                settings.weights,
                arch=settings.arch,
                num_classes=settings.num_classes,
                class_names=settings.class_names,
                threads=settings.threads,
                device=choose_device(settings.device),
            )
            self._describe()
        except UserError as error:
            self.failure = str(error)
            print(f"error: {error}", file=sys.stderr)

    def require_ready(self):
        if self.detector is None:
            raise RequestError(503, self.failure or "the model is still loading")
        return self.detector

    def _describe(self) -> None:
        self.description = describe_detector(self.detector, self.settings.weights)
        self.description["name"] = f"{self.description['arch']} ({self.description['file']})"

    def _predict(self, pictures):
        return self.detector.predict(pictures)


def create_app(settings: ServeSettings, detector=None) -> FastAPI:
    """The app; it loads the model itself (in the background, so liveness answers meanwhile) unless given
    an already loaded `detector`."""
    metrics = ServerMetrics(settings.max_batch, lambda: state.batcher.depth)
    state = ServerState(settings, detector, on_batch=metrics.batch_size.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        loading = None if state.ready else asyncio.create_task(asyncio.to_thread(state.load))
        yield
        if loading is not None:
            await loading
        await state.batcher.stop()  # uvicorn lets the requests in flight finish before this

    app = FastAPI(title="ssd", summary="Single Shot MultiBox Detector", lifespan=lifespan)
    app.state.server = state
    app.state.metrics = metrics

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.observe(_route_of(request), request.method, status, time.perf_counter() - started)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": problems}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        return JSONResponse({"error": "the client went away before the upload ended"}, status_code=400)

    # Starlette runs this after the exception has reached the server, which logs its traceback.
    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        return JSONResponse(
            {"error": f"internal error ({type(error).__name__}); the server's log has the details"},
            status_code=500,
        )

    @app.post("/v1/detect")
    async def detect(request: Request) -> dict[str, Any]:
        detector = state.require_ready()
        asked = await read_detect_request(
            request, settings.max_upload_bytes, detector.class_names, detector.num_classes
        )
        started = time.perf_counter()  # `time_ms` is the server's own time, not the client's upload
        picture = await run_in_threadpool(decode_picture, asked.picture_bytes, settings.max_pixels)
        detections = await state.batcher.detect(picture)
        kept = select_detections(detections, asked.score, asked.labels, asked.max_detections)
        height, width = picture.shape[-2:]
        return {
            "detections": _as_json(kept, detector.class_names),
            "width": int(width),
            "height": int(height),
            "model": state.description["name"],
            "time_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready", "model": state.description["name"]})
        if state.failure is not None:
            return JSONResponse({"status": "failed", "error": state.failure}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        state.require_ready()
        return {
            **state.description,
            # Label k's colour at index k - 1: the colours of the run folder's pictures and `ssd detect`'s.
            "colours": [_hex(class_colour(k)) for k in range(1, state.detector.num_classes)],
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "max_upload_mb": settings.max_upload_mb,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    return app


def app_from_environment() -> FastAPI:
    """The app of a uvicorn worker process (`--workers`), settings from the environment. The model is loaded
    before the app is returned, that is before the worker takes connections: the workers share one socket,
    and a worker still loading would otherwise answer 503 while its siblings are ready."""
    state = ServerState(ServeSettings.from_environment())
    state.load()
    if not state.ready:
        raise SystemExit(2)
    return create_app(state.settings, state.detector)


def _route_of(request: Request) -> str:
    """The route's template (`/v1/detect`), never the raw path, so that scanners probing random paths
    cannot grow the metrics without bound."""
    if request.url.path.startswith("/page/"):
        return "/page"
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{value:02x}" for value in rgb)


def _as_json(detections, class_names) -> list[dict[str, Any]]:
    boxes = detections["result_boxes"].tolist()
    labels = detections["result_labels"].tolist()
    scores = detections["result_scores"].tolist()
    return [
        {
            "box": [round(value, 2) for value in box],
            "label": int(label),
            "name": class_name(int(label), class_names),
            "score": round(float(score), 5),
        }
        for box, label, score in zip(boxes, labels, scores, strict=True)
    ]
