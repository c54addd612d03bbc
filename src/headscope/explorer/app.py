"""The explorer's web application: a Starlette app (ASGI) served by uvicorn, one page, a small JSON API.

Why this stack: Starlette is small (no template engine or ORM to carry), well kept, typed,
and ships an in-process test client; uvicorn is the reference ASGI server. The page is plain
HTML, CSS and JavaScript in this package (``static/``) with no build step, and the attention
pattern is drawn by circuitsvis's own browser bundle, served from the installed ``circuitsvis``
package: no CDN, nothing fetched from the network.

Safety, by default:

- the server binds 127.0.0.1; another address needs an explicit option (:func:`serve`'s
  ``expose``), and then every API call must carry the token printed at start
  (``X-Headscope-Token``), compared in constant time; a ``Host`` header other than the bound
  address is refused (no DNS rebinding from a web page);
- request bodies and texts are size-limited (413), texts are cut to the model's window by the
  one input path (:func:`headscope.models.inputs.encode`, the cut said in the notes);
- one computation at a time behind a bounded queue (:mod:`.gate`): a full queue answers 503,
  a newer request of the same page supersedes an older one still waiting (409);
- the API takes only a text, a head, a position and a token: there is no parameter that names a
  file or a model, and unknown fields are refused (400); static files come from a fixed list;
- every response carries a strict Content-Security-Policy (scripts and styles from this origin
  only; circuitsvis's React components need inline style attributes), ``nosniff``, no referrer,
  no framing; the page writes every text with ``textContent``, never as HTML.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import socket
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import HeadscopeError
from ..jsonsafe import dumps
from .engine import Explorer
from .gate import Busy, Gate, Superseded

log = logging.getLogger("headscope.explorer")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
TOKEN_HEADER = "x-headscope-token"

#: What each API call accepts (anything else is refused): value types and whether required.
FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "text": {"text": ((str,), True)},
    "head": {"text": ((str,), True), "head": ((str,), True), "pos": ((int, type(None)), False)},
    "qk": {"text": ((str,), True), "head": ((str,), True), "pos": ((int, type(None)), False)},
    "position": {"text": ((str,), True), "pos": ((int, type(None)), False), "target": ((str, type(None)), False)},
    "paths": {
        "text": ((str,), True),
        "pos": ((int, type(None)), False),
        "corrupt": ((str,), True),
        "target": ((str, type(None)), False),
        "wrong": ((str, type(None)), False),
    },
    "save": {
        "corrupt": ((str, type(None)), False),
        "text": ((str,), True),
        "head": ((str,), True),
        "pos": ((int, type(None)), False),
        "target": ((str, type(None)), False),
        "wrong": ((str, type(None)), False),
    },
}
PAGE_FIELDS = {"page": ((str,), False), "seq": ((int,), False)}


class RequestError(Exception):
    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def _json(value, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(value, indent=None), status, headers, media_type="application/json")


def _circuitsvis_js() -> bytes:
    import circuitsvis

    return (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_bytes()


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


#: The only files the server sends: name -> (loader, media type). Nothing else on disk can be named.
STATIC: dict[str, tuple[Callable[[], bytes], str]] = {
    "explorer.js": (lambda: _asset("explorer.js"), "text/javascript"),
    "explorer.css": (lambda: _asset("explorer.css"), "text/css"),
    "circuitsvis.js": (_circuitsvis_js, "text/javascript"),
}


class Limits:
    """Request size limits: ``max_body`` bytes of JSON, ``max_chars`` characters of text, ``max_target`` of a token."""

    def __init__(self, max_body: int = 256 * 1024, max_chars: int = 50_000, max_target: int = 64):
        self.max_body, self.max_chars, self.max_target = max_body, max_chars, max_target


async def _read_json(request: Request, limits: Limits) -> dict:
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise RequestError(
            400, f"the Content-Length header {length[:40]!r} is not a number of bytes", "send the body's length"
        )
    if length is not None and int(length) > limits.max_body:
        raise RequestError(413, f"request body over {limits.max_body} bytes", "send a shorter text")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body:
            raise RequestError(413, f"request body over {limits.max_body} bytes", "send a shorter text")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"the request body is not JSON: {exc}", 'send {"text": "..."}') from None
    if not isinstance(doc, dict):
        raise RequestError(400, "the request body must be a JSON object", 'send {"text": "..."}')
    return doc


def _check(doc: dict, call: str, limits: Limits) -> dict:
    allowed = {**FIELDS[call], **PAGE_FIELDS}
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown} for /api/{call}", f"allowed: {sorted(allowed)}")
    for name, (types, required) in allowed.items():
        if name not in doc:
            if required:
                raise RequestError(400, f"/api/{call} needs {name!r}", f"allowed: {sorted(allowed)}")
            continue
        v = doc[name]
        if isinstance(v, bool) or not isinstance(v, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RequestError(400, f"{name!r} must be {want}, got {type(v).__name__}")
    for field in ("text", "corrupt"):
        n = len(doc.get(field) or "")
        if n > limits.max_chars:
            raise RequestError(
                413, f"the {field} has {n} characters, over the limit of {limits.max_chars}", "shorten it"
            )
    for field in ("target", "wrong"):
        if len(doc.get(field) or "") > limits.max_target:
            raise RequestError(400, f"the {field} token is over {limits.max_target} characters", "name a single token")
    if "page" in doc and len(doc["page"]) > 64:
        raise RequestError(400, "'page' is over 64 characters")
    if doc.get("seq", 0) < 0:
        raise RequestError(400, "'seq' must be 0 or more")
    return doc


def _secured(resp: Response) -> Response:
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _token_ok(request: Request, token: str | None) -> bool:
    return token is None or secrets.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), token.encode())


def _endpoint(call: str, work: Callable[[dict], object], gate: Gate, limits: Limits, token: str | None):
    """One API call: token, body, fields, then ``work(doc)`` through the gate; every failure as a JSON error."""

    async def endpoint(request: Request) -> Response:
        try:
            if not _token_ok(request, token):
                raise RequestError(
                    403, "missing or wrong token", "open the address the server printed (it holds the token)"
                )
            doc = _check(await _read_json(request, limits), call, limits)
            out = await gate.run(lambda: work(doc), doc.get("page"), call, doc.get("seq"))
        except RequestError as exc:
            return _secured(_json({"error": exc.message, "hint": exc.hint}, exc.status))
        except HeadscopeError as exc:
            return _secured(_json({"error": exc.message, "hint": exc.hint}, 400))
        except Busy as exc:
            body = {"error": f"the explorer is busy: {exc}", "hint": "try again in a moment"}
            return _secured(_json(body, 503, {"Retry-After": "1"}))
        except Superseded as exc:
            return _secured(_json({"error": str(exc), "superseded": True}, 409))
        except Exception as exc:  # a bug must not take the server down: say it, keep serving
            log.exception("explorer: /api/%s failed", call)
            return _secured(_json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500))
        if isinstance(out, str):
            headers = {"Content-Disposition": 'attachment; filename="headscope-view.html"'}
            return _secured(Response(out, media_type="text/html; charset=utf-8", headers=headers))
        return _secured(_json(out))

    return endpoint


async def _index(request: Request) -> Response:
    return _secured(Response(_asset("index.html"), media_type="text/html; charset=utf-8"))


async def _static(request: Request) -> Response:
    entry = STATIC.get(request.path_params["name"])
    if entry is None:
        return _secured(_json({"error": "no such file"}, 404))
    load, media = entry
    return _secured(Response(load(), media_type=media))


def make_app(
    explorer: Explorer,
    *,
    token: str | None = None,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    limits: Limits | None = None,
    gate: Gate | None = None,
) -> Starlette:
    """The ASGI app over ``explorer``. ``token``: required on every API call when set (exposed servers)."""
    limits = limits or Limits()
    gate = gate or Gate()
    ex = explorer

    async def info(request: Request) -> Response:
        if not _token_ok(request, token):
            return _secured(_json({"error": "missing or wrong token"}, 403))
        m = ex.model
        about = {"model": m.name, "n_layers": m.n_layers, "n_heads": m.n_heads, "max_tokens": ex.max_tokens}
        counts = {"served": gate.served, "refused": gate.refused, "superseded": gate.superseded}
        return _secured(_json({**about, "max_chars": limits.max_chars, **counts}))

    calls: dict[str, Callable[[dict], object]] = {
        "text": lambda d: ex.text_view(d["text"]),
        "head": lambda d: ex.head_view(d["text"], d["head"], d.get("pos")),
        "qk": lambda d: ex.qk_view(d["text"], d["head"], d.get("pos")),
        "position": lambda d: ex.position_view(d["text"], d.get("pos"), d.get("target")),
        "paths": lambda d: ex.paths_view(d["text"], d.get("pos"), d["corrupt"], d.get("target"), d.get("wrong")),
        "save": lambda d: ex.page_html(
            d["text"], d["head"], d.get("pos"), d.get("target"), d.get("corrupt") or None, d.get("wrong") or None
        ),
    }
    routes = [Route("/", _index), Route("/static/{name}", _static), Route("/api/info", info)]
    routes += [
        Route(f"/api/{name}", _endpoint(name, work, gate, limits, token), methods=["POST"])
        for name, work in calls.items()
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))])
    app.state.gate = gate
    return app


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _requests(n: int) -> str:
    return f"{n} request{'' if n == 1 else 's'}"


class ServeRun:
    """What one :func:`serve` run did, for the line said when it is stopped (Ctrl-C, SIGTERM).

    The explorer writes no file: "Save this view" answers with the page and the browser writes it, only
    once all of it has arrived (``Response.text()`` in ``explorer.js``). On a signal the server stops taking
    connections and answers the requests in progress (queued or computing) before it stops; a second Ctrl-C
    stops it without them.
    """

    def __init__(self) -> None:
        self.address: str | None = None  #: where it answered (without the token); None: it never did
        self.in_progress = 0  #: requests queued or computing when the stop began
        self.unanswered = 0  #: of those, the ones still unanswered when the server let go

    def stopped(self) -> str:
        """The line said when the server stops."""
        if self.address is None:
            return (
                "stopped before the explorer started serving; the model and score caches it may have been "
                "filling are written whole or not at all"
            )
        said = (
            f"stopped the explorer at {self.address}; it writes no files (Save this view hands the page to the "
            "browser, which saves it), so nothing was left half-written"
        )
        answered, cut = self.in_progress - self.unanswered, self.unanswered
        if answered:
            said += f"; the {_requests(answered)} in progress {'was' if answered == 1 else 'were'} answered first"
        if cut:
            said += (
                f"; {_requests(cut)} in progress {'was' if cut == 1 else 'were'} cut short by the second Ctrl-C and "
                "answered with an error, not a view (a save cut short downloads nothing)"
            )
        return said


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """The server's listening socket, made before anything slow: a taken ``port`` fails at once, with a hint.

    Bound as uvicorn binds (``SO_REUSEADDR``: a port an earlier run left in TIME_WAIT is reused, one
    another program listens on is not) and listening, so the address stays this process's until
    :func:`serve` answers on it. Close it (``with bind(...) as sock:``) if :func:`serve` is never called.
    """
    from ..errors import BadInput

    where = _address(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BadInput(
                f"cannot serve on {where}: the address is already in use by another program",
                hint="choose another --port (or stop the program using it)",
            ) from None
        if exc.errno == errno.EACCES:
            raise BadInput(
                f"cannot serve on {where}: not allowed to listen on port {port}",
                hint="choose another --port (ports below 1024 need administrator rights)",
            ) from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(
                f"cannot serve on {where}: {host} is not an address of this machine",
                hint="pass one it has to --host (127.0.0.1, or 0.0.0.0 with --expose for every interface)",
            ) from None
        raise BadInput(
            f"cannot serve on {where}: {exc.strerror or exc}", hint="choose another --host or --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    explorer: Explorer,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    expose: bool = False,
    open_browser: bool = True,
    say: Callable[[str], None] = print,
    limits: Limits | None = None,
    max_waiting: int = 8,
    sock: socket.socket | None = None,
    run: ServeRun | None = None,
) -> None:
    """Serve ``explorer`` until interrupted. A non-loopback ``host`` needs ``expose=True`` and gets a token.

    ``sock``: the listening socket :func:`bind` made for ``host`` (the command line binds before
    the model loads); without it, one is bound here. The address is said (through ``say``) only
    once the server answers on it. ``run``: filled with where it served and what a stop left
    unanswered (:meth:`ServeRun.stopped` says it); a stop by a signal ends in ``KeyboardInterrupt``
    (:class:`headscope.errors.Terminated` for SIGTERM where that handler is installed).
    """
    import uvicorn

    from ..errors import BadInput

    if host not in LOOPBACK and not expose:
        raise BadInput(
            f"--host {host} would let other machines reach the explorer",
            hint="pass --expose as well (a token is then required), or keep the default 127.0.0.1",
        )
    token = secrets.token_urlsafe(24) if host not in LOOPBACK else None
    hosts = ("127.0.0.1", "localhost", "[::1]", host) if host not in ("0.0.0.0", "::") else ("*",)
    gate = Gate(max_waiting)
    app = make_app(explorer, token=token, hosts=hosts, limits=limits, gate=gate)
    done = run if run is not None else ServeRun()
    if sock is None:
        sock = bind(host, port)
    port = sock.getsockname()[1]  # the bound one (port 0: the one the system chose)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"http://{_address(shown, port)}/"
    url = address + (f"#token={token}" if token else "")

    def started() -> None:
        done.address = address
        say(
            f"headscope explorer on {url}"
            + (" (the token after # is required: share it only with who may use this)" if token else "")
        )
        say("Ctrl-C stops it.")
        if open_browser:
            import threading
            import webbrowser

            threading.Timer(1.0, lambda: webbrowser.open(url)).start()

    class _Announcing(uvicorn.Server):  # says the address once it answers there, not before
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                started()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            done.in_progress = gate.admitted
            if gate.admitted:
                say(f"stopping: answering the {_requests(gate.admitted)} in progress first (Ctrl-C again skips them)")
            await super().shutdown(sockets=sockets)
            done.unanswered = gate.admitted  # a second Ctrl-C: the server let go of these unanswered
            if done.unanswered:  # their cancellation is said once (ServeRun.stopped), not as uvicorn's tracebacks
                uvicorn_log.setLevel(logging.CRITICAL)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    with sock:
        try:
            _Announcing(config).run(sockets=[sock])
        finally:
            uvicorn_log.setLevel(level)
