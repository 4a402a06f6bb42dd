"""`llamabatch view`: the aiohttp application, its security headers, and serving it.

Pages are rendered on the server; reading Parquet and drawing charts run in
worker threads so a slow page never stalls the others (or a live view's polls).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import pyarrow.dataset as ds
from aiohttp import web

from llamabatch.errors import UsageError
from llamabatch.report.html import report_charts
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import Report, build_report
from llamabatch.results.schema import SCORE_PREFIX
from llamabatch.view import compare as comparing
from llamabatch.view import pages, prompttext
from llamabatch.view import rows as rowq
from llamabatch.view.address import DEFAULT_HOST, DEFAULT_PORT
from llamabatch.view.catalog import Catalog, Run
from llamabatch.view.summary import RunSummary, summarize_run

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SVG_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"  # matplotlib styles inline
# Report tables need numbers, not texts: the run page never reads the outputs, nor the
# columns below that no report uses (over a million rows each one costs memory twice).
UNREPORTED_COLUMNS: Final = frozenset(
    {"output_text", "reasoning_text", "tool_calls", "error_message", "request_params"}
    | {"provider", "model_id", "prompt_hash", "notes", "http_status", "attempts", "queue_s"}
    | {"usage_source", "prompt_tokens_source", "completion_tokens_source"}
    | {"server_prompt_s", "server_decode_s", "server_load_s"}
)
STATIC: Final = {"viewer.css": "text/css", "viewer.js": "text/javascript"}
KEPT: Final = 4
T = TypeVar("T")

Choices = dict[str, list[str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Kept(Generic[T]):
    """The last few values built, by key (a key holds the rows' signatures, so a change in
    the stored rows is a new key and the old value ages out)."""

    def __init__(self, size: int = KEPT) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = self._values[key] = build()
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value


class Viewer:
    """The state behind the routes: the catalog, and what is costly to rebuild per request
    (each costs a read of every part's footer, or of whole columns)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._reports: Kept[tuple[Report, dict[str, str]]] = Kept()
        self._rows: Kept[tuple[ds.Dataset, Choices]] = Kept()
        self._summaries: Kept[RunSummary] = Kept(size=256)

    def run(self, key: str) -> Run:
        try:
            return self.catalog.get(key)
        except KeyError:
            raise web.HTTPNotFound(text=f"no run {key!r} here") from None

    def summary(self, run: Run) -> RunSummary:
        return self._summaries.get((run.key, run.signature(), run.live), lambda: summarize_run(run))

    def rows(self, run: Run) -> tuple[ds.Dataset, Choices]:
        """The run's dataset and the values its filters offer."""

        def build() -> tuple[ds.Dataset, Choices]:
            dataset = run.dataset()
            return dataset, rowq.distinct(dataset, ("model", "status", "error_type"))

        return self._rows.get((run.key, run.signature()), build)

    def report(
        self, runs: Sequence[Run], score: str | None = None
    ) -> tuple[Report, dict[str, str]]:
        """The report of `runs` and its charts (SVG by name)."""

        def build() -> tuple[Report, dict[str, str]]:
            results = load_results([r.path for r in runs], skip=UNREPORTED_COLUMNS)
            report = build_report(results, score=score if score in results.score_names else None)
            return report, report_charts(report)

        return self._reports.get((tuple((r.key, r.signature()) for r in runs), score), build)


def html_response(
    title: str, body: str, request: web.Request, *, poll: str | None = None
) -> web.Response:
    if request.query.get("fragment") == "1":
        return web.Response(text=body, content_type="text/html")
    return web.Response(text=pages.layout(title, body, poll=poll), content_type="text/html")


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


def build_app(catalog: Catalog, *, host: str = DEFAULT_HOST) -> web.Application:
    viewer = Viewer(catalog)
    app = web.Application(middlewares=[_guard(host)])
    routes = web.RouteTableDef()

    @routes.get("/")
    async def runs(request: web.Request) -> web.Response:
        summaries = await in_thread(lambda: [viewer.summary(r) for r in catalog.runs()])
        live = any(s.live for s in summaries)
        return html_response(
            "runs", pages.runs_page(summaries), request, poll="/status" if live else None
        )

    @routes.get("/status")
    async def status(request: web.Request) -> web.Response:
        def signatures() -> dict[str, Any]:
            found = catalog.runs()
            return {
                "live": any(r.live for r in found),
                "signature": repr([(r.key, r.signature()) for r in found]),
            }

        return web.json_response(await in_thread(signatures))

    @routes.get("/run/{key}")
    async def run_page(request: web.Request) -> web.Response:
        run = viewer.run(request.match_info["key"])

        def build() -> str:
            summary = viewer.summary(run)
            if not summary.rows:
                return pages.run_page(summary, None, [])
            report, charts = viewer.report([run])
            return pages.run_page(summary, report, list(charts))

        body = await in_thread(build)
        return html_response(run.key, body, request, poll=_poll(run))

    @routes.get("/run/{key}/status")
    async def run_status(request: web.Request) -> web.Response:
        run = viewer.run(request.match_info["key"])
        signature = await in_thread(run.signature)
        return web.json_response({"live": run.live, "signature": repr(signature)})

    @routes.get("/run/{key}/chart/{name}.svg")
    async def run_chart(request: web.Request) -> web.Response:
        run = viewer.run(request.match_info["key"])
        _, charts = await in_thread(viewer.report, [run])
        return _svg(charts, request.match_info["name"])

    @routes.get("/run/{key}/rows")
    async def rows_page(request: web.Request) -> web.Response:
        run = viewer.run(request.match_info["key"])
        query = rowq.RowQuery.from_params(request.query)
        body = await in_thread(_rows_body, viewer, run, query)
        return html_response(f"{run.key} rows", body, request, poll=_poll(run))

    @routes.get("/run/{key}/prompt")
    async def prompt_page(request: web.Request) -> web.Response:
        run = viewer.run(request.match_info["key"])
        prompt_id = request.query.get("id", "")

        def build() -> str:
            found = rowq.prompt_rows(run.dataset(), [prompt_id])
            found.sort(key=lambda r: r.get("sample") or 0)
            text = prompttext.prompt_text(run, prompt_id)
            return pages.prompt_page(run.key, prompt_id, text, _in_config_order(run, found))

        body = await in_thread(build)
        return html_response(f"{run.key} {prompt_id}", body, request, poll=_poll(run))

    @routes.get("/compare")
    async def compare_page(request: web.Request) -> web.Response:
        a, b = viewer.run(request.query.get("a", "")), viewer.run(request.query.get("b", ""))
        try:
            result, found = await in_thread(comparing.compare_runs, a, b)
        except UsageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        keys = [r.key for r in catalog.runs()]
        body = comparing.compare_page(a.key, b.key, result, found, keys)
        return html_response(f"compare {b.key} with {a.key}", body, request)

    @routes.get("/report")
    async def across_page(request: web.Request) -> web.Response:
        chosen = _chosen(viewer, request)
        report, charts = await in_thread(viewer.report, chosen, request.query.get("score"))
        body = pages.across_page([r.key for r in chosen], report, list(charts))
        return html_response("report", body, request)

    @routes.get("/report/chart/{name}.svg")
    async def across_chart(request: web.Request) -> web.Response:
        chosen = _chosen(viewer, request)
        _, charts = await in_thread(viewer.report, chosen, request.query.get("score"))
        return _svg(charts, request.match_info["name"])

    @routes.get("/static/{name}")
    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:  # a fixed list: nothing else is served from the package
            raise web.HTTPNotFound()
        text = resources.files("llamabatch.view").joinpath("static", name).read_text("utf-8")
        return web.Response(text=text, content_type=STATIC[name])

    app.add_routes(routes)
    return app


def _chosen(viewer: Viewer, request: web.Request) -> list[Run]:
    keys = list(dict.fromkeys(request.query.getall("run", [])))
    if not keys:
        raise web.HTTPBadRequest(text="choose one or more runs (?run=KEY&run=KEY)")
    return [viewer.run(k) for k in keys]


def _poll(run: Run) -> str | None:
    return pages.run_url(run.key, "/status") if run.live else None


def _svg(charts: dict[str, str], name: str) -> web.Response:
    if name not in charts:
        raise web.HTTPNotFound()
    response = web.Response(text=charts[name], content_type="image/svg+xml")
    response.headers["Content-Security-Policy"] = SVG_CSP
    return response


def _rows_body(viewer: Viewer, run: Run, query: rowq.RowQuery) -> str:
    try:
        dataset, choices = viewer.rows(run)
    except LookupError:
        return f"<h1>{pages.e(run.key)} · rows</h1><p>No rows stored yet.</p>"
    specs = (run.manifest.get("config") or {}).get("scorers") or []
    thresholds = {s["name"]: float(s.get("pass_threshold", 0.5)) for s in specs if "name" in s}
    if query.q:
        query = dataclasses.replace(query, prompt_ids=prompttext.search_prompts(run, query.q))
    page = rowq.read_page(dataset, query, thresholds)
    names = dataset.schema.names
    scores = [c[len(SCORE_PREFIX) :] for c in names if c.startswith(SCORE_PREFIX)]
    return pages.rows_page(run.key, query, page, choices, scores)


def _in_config_order(run: Run, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = [m.get("name") for m in (run.manifest.get("config") or {}).get("models") or []]
    rank = {name: i for i, name in enumerate(names)}
    return sorted(rows, key=lambda r: (rank.get(r.get("model"), len(rank)), r.get("model") or ""))


def _guard(host: str) -> Any:
    """Security headers on every answer; on a loopback address, only loopback Host names
    (a web page cannot reach the viewer through DNS rebinding)."""
    loopback = _is_loopback(host)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = (request.host or "").rsplit(":", 1)[0].strip("[]")
        if loopback and not _is_loopback(name):
            return web.Response(status=403, text="llamabatch view answers to loopback names only")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = web.Response(status=exc.status, text=exc.text or exc.reason)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return guard


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    roots: list[Path],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the viewer until cancelled; `ready` gets its URL once it listens."""
    app = build_app(Catalog(roots), host=host)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"--port {port}: cannot listen on {host} ({exc.strerror})") from None
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        if ready is not None:
            ready(f"http://{shown}:{bound}/")
        await anyio.sleep_forever()
    finally:
        await runner.cleanup()
