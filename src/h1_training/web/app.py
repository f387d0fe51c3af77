"""The training web interface as an ASGI app (FastAPI on Starlette), over a :class:`~h1_training.web.backend.Backend`.

    GET  /                       the page (static bundle built from web_ui/ by esbuild)
    GET  /login, POST /login     the login form (only when a token is configured), POST /logout
    GET  /healthz                liveness (no token needed, no data)
    GET  /api/state              every section's latest state (one JSON object)
    GET  /api/events             the live stream (Server-Sent Events, ``event: update``, ``{"topic", "data"}``)
    POST /api/session/command    {"key": "y"|"n"|"s"|"e"}
    POST /api/session/label      {"success": bool, "note": str}
    POST /api/collection/start   {"mode": "hil"|"kinesthetic"|"teleoperation"|"policy", "target_episodes": n}
    POST /api/training/start     {"policy_type": "act"|"diffusion"|"cnn_lstm", "dataset", "steps", "hyperparameters"}
    POST /api/training/stop
    GET  /api/datasets           the catalog;   POST /api/datasets/refresh
    GET  /api/datasets/episode?dataset=NAME&index=I
    POST /api/datasets/export    {"dataset", "format": "hdf5"|"lerobot"|"mcap"}
    POST /api/datasets/delete    {"dataset", "index"}    (the dataset manager moves it to its trash)
    POST /api/datasets/flag      {"dataset", "index", "flagged": bool}   ("exclude from training")
    POST /api/comparison/start   {"model_ids": [2-4 ids], "mode": "ab"|"detailed", "trials_per_model", "alpha"}
    POST /api/comparison/stop;   POST /api/models/deploy {"model_id"}
    GET  /api/workflow/parameters;   POST /api/workflow/parameters {"name", "value"}

Nothing changes state on GET. Bodies are JSON, validated (422 with every problem named); an unknown dataset,
episode, model or parameter is 404, a bad name 400, a name outside the data root 403, a refusal by the system
409 with its reason, a part of the system that is not running 503. No CORS headers are ever sent, and a
state-changing request that names another origin is refused (403).
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from h1_training.web import security
from h1_training.web.backend import Backend, BackendError, Outcome, TrainingRequest, check_param_value
from h1_training.web.live import LiveHub, sse_event

STATIC_DIR = Path(__file__).parent / "static"
BUNDLE_FILES = ("app.js", "app.css")


@dataclass
class WebConfig:
    token: str = ""                                   # "" = no token (loopback only, see security.check_bind)
    data_roots: list[str] = field(default_factory=lambda: ["data"])  # [] = no root check
    static_dir: Path = STATIC_DIR
    heartbeat_s: float = 15.0


# --- request bodies ------------------------------------------------------------------------------------------
class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCommandBody(Body):
    key: Literal["y", "n", "s", "e"]


class LabelBody(Body):
    success: bool
    note: str = Field("", max_length=500)


class CollectionBody(Body):
    mode: Literal["hil", "kinesthetic", "teleoperation", "policy"]
    target_episodes: int = Field(..., ge=1, le=100_000)


class TrainingBody(Body):
    policy_type: Literal["act", "diffusion", "cnn_lstm"]
    dataset: str = Field("", max_length=512)
    steps: int = Field(0, ge=0, le=10_000_000)
    hyperparameters: dict[str, float | int | bool | str] = Field(default_factory=dict, max_length=64)


class DatasetBody(Body):
    dataset: str = Field(..., min_length=1, max_length=512)


class ExportBody(DatasetBody):
    format: Literal["hdf5", "lerobot", "mcap"]


class EpisodeBody(DatasetBody):
    index: int = Field(..., ge=0, le=1_000_000)


class FlagBody(EpisodeBody):
    flagged: bool


class ComparisonBody(Body):
    model_ids: list[str] = Field(..., min_length=2, max_length=4)
    mode: Literal["ab", "detailed", ""] = ""
    trials_per_model: int = Field(0, ge=0, le=100_000)
    alpha: float = Field(0.0, ge=0.0, le=0.2)


class DeployBody(Body):
    model_id: str = Field(..., min_length=1, max_length=128)


class ParamBody(Body):
    name: str = Field(..., min_length=1, max_length=200)
    value: bool | int | float | str | list[bool | int | float | str]


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def create_app(backend: Backend, config: WebConfig | None = None) -> FastAPI:
    cfg = config or WebConfig()
    hub = LiveHub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        unsubscribe = backend.add_listener(hub.publish)
        try:
            yield
        finally:
            unsubscribe()

    app = FastAPI(title="h1_training web", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.backend, app.state.hub, app.state.config = backend, hub, cfg
    app.state.stopping = False  # set by WebServer.stop(): open live streams end so the server stops cleanly

    # --- errors and headers ----------------------------------------------------------------------------------
    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"ok": False, "error": exc.message, **exc.extra}, status_code=exc.status)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            details.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"ok": False, "error": "invalid request: " + "; ".join(details), "details": details},
                            status_code=422)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable) -> Response:
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            host = request.headers.get("host", "")
            if origin and origin.split("://", 1)[-1] != host:
                return JSONResponse({"ok": False, "error": f"cross-origin request from {origin} refused"},
                                    status_code=403)
            if request.url.path.startswith("/api/") and request.headers.get("content-length", "0") != "0" and \
                    not request.headers.get("content-type", "").startswith("application/json"):
                return JSONResponse({"ok": False, "error": "request bodies must be application/json"},
                                    status_code=415)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes form posts send Origin: null
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'")
        return response

    # --- authentication --------------------------------------------------------------------------------------
    def authed(request: Request) -> bool:
        return security.token_ok(
            cfg.token, bearer=security.bearer_of(request.headers.get("authorization")),
            header=request.headers.get("x-h1-token"), cookie=request.cookies.get(security.COOKIE))

    def require_token(request: Request) -> None:
        if not authed(request):
            missing = not (request.headers.get("authorization") or request.headers.get("x-h1-token")
                           or request.cookies.get(security.COOKIE))
            raise HttpError(401, "token required (log in at /login, or send Authorization: Bearer <token>)"
                            if missing else "wrong token")

    guarded = [Depends(require_token)]

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return HTMLResponse(_login_page("" if cfg.token else "No token is configured: nothing to log in to."))

    @app.post("/login")
    async def login(token: Annotated[str, Form(max_length=512)] = "") -> Response:
        if not cfg.token:
            return RedirectResponse("/", status_code=303)
        if not security.token_ok(cfg.token, bearer=None, header=token, cookie=None):
            return HTMLResponse(_login_page("Wrong token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(security.COOKIE, security.session_value(cfg.token), httponly=True, samesite="strict",
                            path="/")
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(security.COOKIE, path="/")
        return response

    # --- the page --------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        if not authed(request):
            return RedirectResponse("/login", status_code=303)
        missing = [f for f in BUNDLE_FILES if not (cfg.static_dir / f).is_file()]
        if missing:
            return HTMLResponse(
                "<h1>h1_training web: the page is not built</h1><p>Missing " + ", ".join(missing) + " in "
                + html.escape(str(cfg.static_dir)) + ". Run <code>scripts/setup_env.sh</code> (or <code>cd web_ui "
                "&amp;&amp; npm install &amp;&amp; npm run build</code>). The API under /api works.</p>",
                status_code=503)
        return FileResponse(cfg.static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    if cfg.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=cfg.static_dir), name="static")

    # --- state and live stream -------------------------------------------------------------------------------
    @app.get("/api/state", dependencies=guarded)
    async def get_state() -> dict[str, Any]:
        return await run_in_threadpool(backend.state)

    @app.get("/api/events", dependencies=guarded)
    async def events(request: Request) -> StreamingResponse:
        sub = hub.subscribe(asyncio.get_running_loop())
        snapshot = await run_in_threadpool(backend.state)

        async def stream() -> AsyncIterator[bytes]:
            seq = 0
            try:
                yield b"retry: 2000\n\n"
                for topic, payload in snapshot.items():
                    seq += 1
                    if topic in ("loss",):
                        payload = {**payload, "reset": True}
                    yield sse_event(topic, payload, seq)
                last = time.monotonic()
                while True:
                    batch = await sub.next_batch(timeout=0.5)
                    if app.state.stopping or await request.is_disconnected():
                        return
                    for topic, payload in batch.items():
                        seq += 1
                        yield sse_event(topic, payload, seq)
                    if batch:
                        last = time.monotonic()
                    elif time.monotonic() - last > cfg.heartbeat_s:
                        last = time.monotonic()
                        yield b": keep-alive\n\n"
            finally:
                hub.unsubscribe(sub)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- helpers ---------------------------------------------------------------------------------------------
    async def call(fn: Callable[..., Outcome], *args: Any) -> JSONResponse:
        outcome = await run_in_threadpool(fn, *args)
        body = {"ok": outcome.ok, "message": outcome.message, **outcome.data}
        return JSONResponse(body, status_code=200 if outcome.ok else 409)

    def datasets_now() -> list[dict[str, Any]]:
        return list(backend.state().get("datasets", {}).get("datasets", []))

    def known_dataset(name: str) -> dict[str, Any]:
        reason = security.check_dataset_name(name)
        if reason:
            raise HttpError(400, reason)
        sets = datasets_now()
        found = next((d for d in sets if d.get("name") == name), None)
        if found is None:
            names = [d.get("name") for d in sets]
            raise HttpError(404, f"no dataset {name!r}" + (f"; known: {', '.join(names[:20])}" if names
                                                          else "; the catalog is empty (refresh?)"))
        if cfg.data_roots and not any(security.under_root(found.get("path", ""), r) for r in cfg.data_roots):
            raise HttpError(403, f"dataset {name!r} lies outside the data root(s) {', '.join(cfg.data_roots)}")
        return found

    def known_episode(name: str, index: int) -> None:
        ds = known_dataset(name)
        n = int(ds.get("num_episodes", 0))
        if not 0 <= index < n:
            raise HttpError(404, f"episode index {index} out of range: {name} has {n} episode(s)")

    # --- session ---------------------------------------------------------------------------------------------
    @app.post("/api/session/command", dependencies=guarded)
    async def session_command(body: SessionCommandBody) -> JSONResponse:
        return await call(backend.session_command, body.key)

    @app.post("/api/session/label", dependencies=guarded)
    async def session_label(body: LabelBody) -> JSONResponse:
        return await call(backend.session_label, body.success, body.note)

    @app.post("/api/collection/start", dependencies=guarded)
    async def collection_start(body: CollectionBody) -> JSONResponse:
        return await call(backend.start_data_collection, body.mode, body.target_episodes)

    # --- training --------------------------------------------------------------------------------------------
    @app.post("/api/training/start", dependencies=guarded)
    async def training_start(body: TrainingBody) -> JSONResponse:
        if body.dataset:
            await run_in_threadpool(known_dataset, body.dataset)
        req = TrainingRequest(body.policy_type, body.dataset, body.steps, dict(body.hyperparameters))
        return await call(backend.start_training, req)

    @app.post("/api/training/stop", dependencies=guarded)
    async def training_stop() -> JSONResponse:
        return await call(backend.stop_training)

    # --- datasets --------------------------------------------------------------------------------------------
    @app.get("/api/datasets", dependencies=guarded)
    async def datasets() -> dict[str, Any]:
        return {"datasets": await run_in_threadpool(datasets_now)}

    @app.post("/api/datasets/refresh", dependencies=guarded)
    async def datasets_refresh() -> JSONResponse:
        return await call(backend.refresh_datasets)

    @app.get("/api/datasets/episode", dependencies=guarded)
    async def episode(dataset: Annotated[str, Query(min_length=1, max_length=512)],
                      index: Annotated[int, Query(ge=0, le=1_000_000)]) -> dict[str, Any]:
        await run_in_threadpool(known_episode, dataset, index)
        return await run_in_threadpool(backend.episode, dataset, index)

    @app.post("/api/datasets/export", dependencies=guarded)
    async def export(body: ExportBody) -> JSONResponse:
        await run_in_threadpool(known_dataset, body.dataset)
        return await call(backend.export_dataset, body.dataset, body.format)

    @app.post("/api/datasets/delete", dependencies=guarded)
    async def delete(body: EpisodeBody) -> JSONResponse:
        await run_in_threadpool(known_episode, body.dataset, body.index)
        return await call(backend.delete_episode, body.dataset, body.index)

    @app.post("/api/datasets/flag", dependencies=guarded)
    async def flag(body: FlagBody) -> JSONResponse:
        await run_in_threadpool(known_episode, body.dataset, body.index)
        return await call(backend.flag_episode, body.dataset, body.index, body.flagged)

    # --- comparison and models -------------------------------------------------------------------------------
    @app.post("/api/comparison/start", dependencies=guarded)
    async def comparison_start(body: ComparisonBody) -> JSONResponse:
        for mid in body.model_ids:
            reason = security.check_model_id(mid)
            if reason:
                raise HttpError(400, reason)
        if len(set(body.model_ids)) != len(body.model_ids):
            raise HttpError(400, "model_ids must be distinct")
        mode = body.mode or ("ab" if len(body.model_ids) == 2 else "detailed")
        if mode == "ab" and len(body.model_ids) != 2:
            raise HttpError(400, f"an A/B test compares exactly 2 models, got {len(body.model_ids)}")
        return await call(backend.start_comparison, list(body.model_ids), mode, body.trials_per_model, body.alpha)

    @app.post("/api/comparison/stop", dependencies=guarded)
    async def comparison_stop() -> JSONResponse:
        return await call(backend.stop_comparison)

    @app.post("/api/models/deploy", dependencies=guarded)
    async def deploy(body: DeployBody) -> JSONResponse:
        reason = security.check_model_id(body.model_id)
        if reason:
            raise HttpError(400, reason)
        models = (await run_in_threadpool(backend.state)).get("models", {}).get("models")
        if models is not None and body.model_id not in models:
            raise HttpError(404, f"no model {body.model_id!r}; known: {', '.join(models[:20]) or 'none'}")
        return await call(backend.deploy_model, body.model_id)

    # --- workflow parameters ---------------------------------------------------------------------------------
    @app.get("/api/workflow/parameters", dependencies=guarded)
    async def workflow_parameters() -> dict[str, Any]:
        params = await run_in_threadpool(backend.workflow_parameters)
        return {"parameters": [p.as_dict() for p in params]}

    @app.post("/api/workflow/parameters", dependencies=guarded)
    async def set_workflow_parameter(body: ParamBody) -> JSONResponse:
        params = {p.name: p for p in await run_in_threadpool(backend.workflow_parameters)}
        if body.name not in params:
            raise HttpError(404, f"no workflow parameter {body.name!r}; known: {', '.join(sorted(params)) or 'none'}")
        value, reason = check_param_value(params[body.name], body.value)
        if reason:
            raise HttpError(400, reason)
        return await call(backend.set_workflow_parameter, body.name, value)

    return app


def _login_page(message: str) -> str:
    note = f'<p class="msg">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>h1_training - log in</title>
<style>body{{font-family:sans-serif;max-width:24em;margin:4em auto}}input{{width:100%;padding:.4em}}
.msg{{color:#b00}}</style></head><body><h1>h1_training</h1>{note}
<form method="post" action="/login"><label>Token <input type="password" name="token" autofocus
autocomplete="current-password"></label><p><button type="submit">Log in</button></p></form></body></html>"""
