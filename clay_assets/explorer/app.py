"""The explorer's ASGI app (Starlette): the page, its static files and a read-only JSON API.

Routes (GET only; every parameter is checked by :mod:`clay_assets.explorer.params`, an unknown
one is refused)::

    /                    the page (static/index.html)
    /static/...          app.js, explorer.css, vendor/leaflet/ (Leaflet 1.9.4, BSD-2-Clause)
    /api/overview        tiles and weekly windows in the database
    /api/chips           tiles, window: the chips of a week, change score, flag, latest event
    /api/similar         chip, date, k, min_similarity, tiles, from, to: clay.similar_chips_filtered
    /api/labeled         pos, neg (CHIP@YYYY-MM-DD,...), k, min_similarity, tiles, from, to:
                         clay.search_labeled
    /api/probe           pos, neg, k, tiles, from, to: a logistic-regression probe, in memory
    /api/timeline        chip: change score, PC1 and the detector's baseline per date; events
    /api/thumb           chip, date: the observation's thumbnail PNG (only files under the data root)

Errors are JSON ``{"error": "<one line>"}``: 400 for a bad parameter, 404 for an unknown
chip or observation, 501 when the database lacks a function, 503 when it is unreachable or
too slow. Responses carry a Content-Security-Policy that allows only this origin, so the page
cannot load anything from elsewhere; requests for another Host are refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clay_assets.explorer import params as P
from clay_assets.explorer.queries import Explorer

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
_log = logging.getLogger(__name__)
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
_SEARCH = ("k", "min_similarity", "tiles", "from", "to")


def _known(q, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(q) - set(allowed))
    if extra:
        raise P.BadRequest(f"unknown parameter {extra[0][:40]!r}; this endpoint takes "
                           f"{', '.join(allowed) if allowed else 'no parameters'}")


def _filters(q) -> dict:
    date_from, date_to = P.day(q, "from"), P.day(q, "to")
    if date_from and date_to and date_from > date_to:
        raise P.BadRequest(f"from {date_from} is after to {date_to}")
    return {"tiles": P.tiles(q), "date_from": date_from, "date_to": date_to}


def _labels(q) -> tuple[list, list]:
    pos, neg = P.observations(q, "pos"), P.observations(q, "neg")
    if not pos:
        raise P.BadRequest("pos is required: at least one positive observation CHIP@YYYY-MM-DD")
    both = set(pos) & set(neg)
    if both:
        raise P.BadRequest(f"{sorted(map(str, both))[0]} is labelled both positive and negative")
    if len(pos) + len(neg) > P.MAX_LABELS:
        raise P.BadRequest(f"pos + neg: at most {P.MAX_LABELS} labelled observations, got {len(pos) + len(neg)}")
    return pos, neg


def _api(ex: Explorer) -> list[Route]:
    def overview(q):
        _known(q, ())
        return ex.overview()

    def chips(q):
        _known(q, ("tiles", "window"))
        window = P.window(q)
        if window is None:
            raise P.BadRequest("window is required: a weekly window's Monday, YYYY-MM-DD (see /api/overview)")
        return {"window": window.isoformat(), "chips": ex.chips(P.tiles(q), window)}

    def similar(q):
        _known(q, ("chip", "date") + _SEARCH)
        return ex.similar(P.chip_id(q), P.day(q, "date"), P.integer(q, "k", 10, 1, P.MAX_K),
                          P.number(q, "min_similarity", 0.0, -1.0, 1.0), **_filters(q))

    def labeled(q):
        _known(q, ("pos", "neg") + _SEARCH)
        return ex.labeled(*_labels(q), P.integer(q, "k", 10, 1, P.MAX_K),
                          P.number(q, "min_similarity", 0.0, -1.0, 1.0), **_filters(q))

    def probe(q):
        _known(q, ("pos", "neg", "k", "tiles", "from", "to"))
        pos, neg = _labels(q)
        if not neg:
            raise P.BadRequest("neg is required for the probe: at least one negative observation CHIP@YYYY-MM-DD")
        return ex.probe(pos, neg, P.integer(q, "k", 10, 1, P.MAX_K), **_filters(q))

    def timeline(q):
        _known(q, ("chip",))
        return ex.timeline(P.chip_id(q))

    def thumb(q):
        _known(q, ("chip", "date"))
        when = P.day(q, "date")
        if when is None:
            raise P.BadRequest("date is required: the observation's date, YYYY-MM-DD")
        return FileResponse(ex.thumbnail(P.chip_id(q), when), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=300"})

    handlers: dict[str, Callable] = {"overview": overview, "chips": chips, "similar": similar, "labeled": labeled,
                                     "probe": probe, "timeline": timeline, "thumb": thumb}
    return [Route(f"/api/{name}", _endpoint(fn), methods=["GET"]) for name, fn in handlers.items()]


def _endpoint(fn: Callable) -> Callable:
    """A sync endpoint (Starlette runs it in its thread pool) turning errors into JSON."""

    def endpoint(request: Request) -> Response:
        try:
            out = fn(request.query_params)
        except (P.BadRequest, P.NotFound) as exc:
            return _error(exc.status, str(exc))
        except psycopg.errors.UndefinedFunction as exc:
            return _error(501, f"the database lacks a function this page needs ({exc.diag.message_primary}); "
                               "update its schema: materialize vectors with this version of clay-assets")
        except psycopg.errors.QueryCanceled:
            return _error(503, "the query ran past the explorer's statement timeout; narrow it with tiles or dates")
        except psycopg.errors.InvalidParameterValue as exc:
            return _error(400, exc.diag.message_primary or "invalid parameter")
        except psycopg.errors.NoDataFound as exc:
            return _error(404, exc.diag.message_primary or "not found")
        except psycopg.OperationalError:
            return _error(503, "the database is unreachable; is its server running? (clay-assets db-url starts it)")
        return out if isinstance(out, Response) else JSONResponse(out)

    return endpoint


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _index(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


class _Headers:
    """Security headers on every response (ASGI middleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(b"content-security-policy", _CSP.encode()),
                                       (b"x-content-type-options", b"nosniff"),
                                       (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(explorer: Explorer, hosts: list[str] | None = None) -> Starlette:
    """The explorer app over ``explorer``; ``hosts``: the Host names it answers (default the
    loopback names)."""
    routes = [Route("/", _index, methods=["GET"]), *_api(explorer),
              Mount("/static", app=StaticFiles(directory=STATIC), name="static")]
    allowed = hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        explorer.close()

    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(_Headers), Middleware(TrustedHostMiddleware, allowed_hosts=allowed)])
