"""The feature-discovery web UI: server-rendered pages (Jinja2), one small script, no CDN.

Mounted at /ui by `featsync serve --ui` and `featsync ui`. Every asset ships in this package
(templates/, static/), so the pages work offline. Pages read the registry the worker loaded,
the push state in Redis (one HGETALL per view shown, pipelined), and the results validate,
drift, status and verify recorded under target/featsync/<target>/results/; none of them
queries the warehouse. Counting a view's keys online is a SCAN of the whole keyspace, so it
runs only when asked for (a button on the view page) and is cached for a minute.

When the server has a bearer token, every UI page requires it too: a browser signs in once
on /ui/login, which keeps the token in an HttpOnly, SameSite=Strict cookie scoped to /ui.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from featsync.monitoring import drift as drift_lib
from featsync.online.auth import COOKIE, authorized, cookie_value, token_matches, unauthorized
from featsync.online.limits import error_body, internal_error
from featsync.online.state import layout_of, read_states
from featsync.project import Project
from featsync.quality.validate import resolve_now
from featsync.registry import Registry, format_duration
from featsync.results import ResultCache, online_store
from featsync.ui import pages

PREFIX = "/ui"
FILTERS = ("entity", "tag", "owner", "online")
KINDS = ("feature_view", "feature_service")
CATALOG_PAGES = 64  # rendered catalog pages kept, one per filter
CATALOG_ROWS = 50  # rows listed per kind (views, services) until the user asks for all: a light page
KEY_COUNT_SECONDS = 60.0  # how long a key count (one SCAN of the keyspace) is reused
SECURITY_HEADERS = {
    # Nothing is fetched from anywhere but this server; the drift report is framed from here only.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
log = logging.getLogger(__name__)


class UI:
    """The pages of one worker; `client()` returns the server's async Redis client."""

    def __init__(
        self,
        project: Project,
        registry: Registry,
        client: Callable[[], Any],
        key_prefix: str | None = None,
        token: str | None = None,
        timeout: float = 1.0,
        catalog_rows: int = CATALOG_ROWS,
    ):
        self.project = project
        self.registry = registry
        self.client = client
        self.key_prefix = key_prefix
        self.token = token
        self.timeout = timeout
        self.results = ResultCache(project, lambda: online_store(registry, client(), key_prefix))
        self.compiled = pages.CompiledSQL.of(project)
        self.compiled.get({})  # read dbt's manifest now, not on the first page view
        self.rows = pages.catalog_rows(registry)
        self.index = pages.catalog_index(self.rows)
        self.catalog_rows = catalog_rows
        self.facets = pages.facets(self.rows)
        self.key_counts: dict[str, tuple[float, int]] = {}
        self.catalog_pages: dict[tuple[str, ...], str] = {}
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("featsync.ui", "templates"),
            autoescape=jinja2.select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(base=PREFIX, when=pages.when, project=registry.project_name)
        self.templates.filters["url"] = lambda name: quote(str(name), safe="")
        self.templates.filters["duration"] = format_duration

    # -- routes ------------------------------------------------------------------------------

    def app(self) -> Starlette:
        static = StaticFiles(directory=str(files("featsync.ui") / "static"))
        routes = [
            Route("/", self.catalog, name="catalog"),
            Route("/views/{name}", self.feature_view, name="feature_view"),
            Route("/services/{name}", self.feature_service, name="feature_service"),
            Route("/health", self.health, name="health"),
            Route("/drift/{name}", self.drift_report, name="drift"),
            Route("/login", self.login, methods=["GET", "POST"], name="login"),
            Mount("/static", static, name="static"),
        ]
        return Starlette(routes=routes, exception_handlers={Exception: self.server_error})

    def guard(self, app: Any) -> Any:
        """ASGI wrapper: the token (when configured) on every UI path but the login page and assets."""

        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and self.token and not self._open_path(scope) and not self._authorized(scope):
                path = scope.get("path", "")  # the whole path (Starlette keeps it; root_path is the mount's)
                response: Response = RedirectResponse(f"{PREFIX}/login?next={quote(path)}", 303)
                if _wants_json(scope):
                    response = unauthorized()
                await response(scope, receive, send)
                return
            await app(scope, receive, send)

        return guarded

    def _open_path(self, scope: dict) -> bool:
        path = scope.get("path", "")
        return path.endswith("/login") or "/static/" in path

    def _authorized(self, scope: dict) -> bool:
        return authorized(scope, None if self.token is None else str(self.token), cookie=True)

    async def login(self, request: Request) -> Response:
        target = request.query_params.get("next") or f"{PREFIX}/"
        if not target.startswith(PREFIX + "/"):  # never redirect off this UI
            target = f"{PREFIX}/"
        error = None
        if request.method == "POST":
            body = await request.body()  # a urlencoded form of one field (no multipart parser needed)
            given = (parse_qs(body[:4096].decode("utf-8", "replace")).get("token") or [""])[0]
            if token_matches(given, None if self.token is None else str(self.token)):
                response = RedirectResponse(target, 303)
                if self.token:
                    secure = request.url.scheme == "https"
                    response.set_cookie(COOKIE, cookie_value(given), httponly=True, samesite="strict", path=PREFIX, secure=secure)
                return response
            error = "That token is not the server's."
        return self.page("login.html", request, code=401 if error else 200, next=target, error=error, title="Sign in")

    async def catalog(self, request: Request) -> Response:
        """The catalog depends on the registry (fixed for the worker's life) and the filter only,
        so each filter's page is rendered once and kept (a few dozen of them at most).

        It lists the first `catalog_rows` matches of each kind (all of them with ?all=1), and
        carries every row as a JSON index that the script filters as one types."""
        q = request.query_params
        key = (q.get("q", ""), *(q.get(k, "") for k in FILTERS), "all" if "all" in q else "")
        html = self.catalog_pages.get(key)
        if html is None:
            query, chosen, show_all = key[0], dict(zip(FILTERS, key[1:-1], strict=True)), bool(key[-1])
            words = pages.search_words(query)
            matches = {kind: [r for r in self.rows if r.kind == kind and r.matches(words, **chosen)] for kind in KINDS}
            limit = None if show_all else self.catalog_rows
            listed = {kind: found[:limit] for kind, found in matches.items()}
            more = urlencode({k: v for k, v in zip(("q", *FILTERS), key[:-1], strict=True) if v} | {"all": "1"})
            context = dict(
                total=len(self.rows),
                matches=matches,
                listed=listed,
                more=more,
                page_rows=self.catalog_rows,
                show_all=show_all,
                index=self.index,
                query=query,
                chosen=chosen,
                facets=self.facets,
                title="Catalog",
            )
            html = self.render("catalog.html", request, **context)
            if len(self.catalog_pages) >= CATALOG_PAGES:
                self.catalog_pages.pop(next(iter(self.catalog_pages)))
            self.catalog_pages[key] = html
        return self.respond(html)

    async def feature_view(self, request: Request) -> Response:
        name = request.path_params["name"]
        view = self.registry.feature_views.get(name)
        if view is None:
            return self.not_found(request, f"no feature view named '{name}'")
        states = await self.states([view]) if view.online else {}
        keys = None
        if view.online and request.query_params.get("count_keys"):
            keys = await self.count_keys(view)
        data = pages.feature_view_page(
            self.project,
            self.registry,
            view,
            None if states is None else states.get(view.name, {}),
            resolve_now(),
            self.results,
            self.compiled,
            self.link,
        )
        return self.page("view.html", request, **data, keys=keys, redis_down=states is None, title=view.name)

    async def feature_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            service = self.registry.service(name)
        except Exception:  # noqa: BLE001 - NotFoundError, or a malformed name
            return self.not_found(request, f"no feature service named '{name}'")
        return self.page("service.html", request, **pages.service_page(self.registry, service), title=service.exposure)

    async def health(self, request: Request) -> Response:
        views = self.registry.online_views()
        states = await self.states(views)
        rows = pages.health_rows(self.registry, states, resolve_now(), self.results)
        return self.page("health.html", request, rows=rows, redis_down=states is None, title="Health")

    async def drift_report(self, request: Request) -> Response:
        """The last drift report of a view, as the self-contained HTML `featsync drift --html` writes."""
        name = request.path_params["name"]
        view = self.registry.feature_views.get(name)
        recorded = None if view is None else self.results.current("drift", view)
        if recorded is None:
            return self.not_found(request, f"no drift report recorded for '{name}'")
        html = drift_lib.html_report(drift_lib.DriftReport.from_dict(recorded))
        response = HTMLResponse(html)
        response.headers.update(SECURITY_HEADERS)
        # The report is a separate document with its own inline style and no script.
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
        return response

    # -- helpers -----------------------------------------------------------------------------

    def link(self, kind: str, unique_id: str) -> str | None:
        name = unique_id.split(".")[-1]
        if kind == "feature_view":
            return f"{PREFIX}/views/{quote(name, safe='')}"
        if kind == "exposure" and name in self.registry.services:
            return f"{PREFIX}/services/{quote(name, safe='')}"
        return None

    def page(self, template: str, request: Request, code: int = 200, **context: Any) -> Response:
        return self.respond(self.render(template, request, **context), code)

    def render(self, template: str, request: Request, **context: Any) -> str:
        return self.templates.get_template(template).render(request_path=request.url.path, **context)

    def respond(self, html: str, code: int = 200) -> Response:
        response = HTMLResponse(html, code)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """A page that raised: a page saying so for a browser, else the server's JSON 500 (as
        the API answers); Starlette then re-raises, and the server's guard counts it and logs
        the traceback once (featsync.online.limits)."""
        message = internal_error(exc)
        if _wants_json(request.scope):
            return Response(error_body(message), 500, media_type="application/json")
        return self.page("error.html", request, code=500, message=message, title="Server error")

    def not_found(self, request: Request, message: str) -> Response:
        return self.page("not_found.html", request, code=404, message=message, title="Not found")

    async def states(self, views: list) -> dict[str, dict[str, str]] | None:
        """The push state of each view (one pipelined round trip), or None when Redis does not answer."""
        if not views:
            return {}
        layouts = [layout_of(self.registry, view, self.key_prefix) for view in views]
        try:
            replies = await asyncio.wait_for(read_states(self.client(), layouts), self.timeout * 2)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning("push state unavailable for the UI: %s", exc)
            return None
        return {view.name: state for view, state in zip(views, replies, strict=True)}

    async def count_keys(self, view: Any) -> int | None:
        """Keys online of one view: a SCAN over featsync's namespace, reused for a minute."""
        from featsync.online.layout import KEY_PREFIX

        layout = layout_of(self.registry, view, self.key_prefix)
        cached = self.key_counts.get(layout.prefix)
        if cached and time.monotonic() - cached[0] < KEY_COUNT_SECONDS:
            return cached[1]
        try:
            count = 0
            async for _ in self.client().scan_iter(match=f"{layout.prefix}*", count=10_000):
                count += 1
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot count keys of %s: %s (under %s:*)", view.name, exc, KEY_PREFIX)
            return None
        self.key_counts[layout.prefix] = (time.monotonic(), count)
        return count


def _wants_json(scope: dict) -> bool:
    headers = dict(scope.get("headers") or [])
    return b"text/html" not in headers.get(b"accept", b"")


def mount(
    project: Project,
    registry: Registry,
    client: Callable[[], Any],
    key_prefix: str | None = None,
    token: str | None = None,
    timeout: float = 1.0,
    catalog_rows: int = CATALOG_ROWS,
) -> list[Any]:
    """Routes to add to the server: /ui (the pages) and / (a redirect to them)."""
    ui = UI(project, registry, client, key_prefix, token, timeout, catalog_rows)

    async def to_catalog(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", 307)

    return [
        Route("/", to_catalog, include_in_schema=False),
        Route(PREFIX, to_catalog, include_in_schema=False),
        Mount(PREFIX, ui.guard(ui.app())),
    ]
