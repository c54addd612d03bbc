"""The explorer's whole flow in a real browser: Playwright driving the system's Chromium, offline.

Type a text, wait for the heads table, click a head and see its pattern and QK view change,
click a token and see the logit view change, reload from the address and get the same view.
Nothing but the local server may be reached (every other request is aborted and recorded).
"""

from __future__ import annotations

import threading
import time

import pytest

from _browser import OFFLINE_FLAGS, WHY_NO_CHROMIUM, WHY_NO_PLAYWRIGHT, ensure_chromium
from headscope.explorer import Explorer
from headscope.explorer.app import make_app

TEXT = "The cat sat on the mat. The cat sat on the mat."


@pytest.fixture(scope="module")
def server(tiny_llama):
    import uvicorn

    ex = Explorer(tiny_llama, max_tokens=128)
    server = uvicorn.Server(uvicorn.Config(make_app(ex), host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/", ex
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(WHY_NO_PLAYWRIGHT)
    exe = ensure_chromium()
    if not exe:
        pytest.skip(WHY_NO_CHROMIUM)
    # the report tests' offline flags, less the dead proxy and the dead resolver (they catch loopback too):
    # aborts anything that is not the local server
    flags = [f for f in OFFLINE_FLAGS if not f.startswith(("--proxy", "--host-resolver"))]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=flags)
        yield b
        b.close()


def _page(browser, base: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log = {"errors": [], "blocked": []}
    page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["errors"].append(f"uncaught: {e}"))

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            log["blocked"].append(r.request.url)
            r.abort("blockedbyclient")

    page.route("**/*", route)
    return page, log


def _until(page, expr: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"!!({expr})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expr!r} still false after {timeout} s")
        page.wait_for_timeout(50)


def test_type_click_change_and_reload(server, browser, tmp_path):
    base, ex = server
    n_rows = ex.model.n_layers * ex.model.n_heads
    page, log = _page(browser, base)
    page.goto(base)
    page.fill("#text", TEXT)
    page.click("#run")
    _until(page, f"document.querySelectorAll('#heads tbody tr').length === {n_rows}")
    _until(page, "document.querySelector('#pattern-box canvas, #pattern-box svg')")

    page.click("#heads tbody tr[data-head='L1H2']")
    _until(page, "document.getElementById('pattern-box').dataset.head === 'L1H2'")
    _until(page, "document.getElementById('qk-title').textContent.includes('L1H2: what the score')")
    qk_a = page.text_content("#qk")
    assert page.evaluate("document.querySelector('#heads tr.sel').dataset.head") == "L1H2"

    page.click("#heads tbody tr[data-head='L2H0']")
    _until(page, "document.getElementById('pattern-box').dataset.head === 'L2H0'")
    _until(page, "document.getElementById('qk-title').textContent.includes('L2H0: what the score')")
    assert page.text_content("#qk") != qk_a  # another head, another decomposition
    assert page.query_selector("#pattern-box canvas, #pattern-box svg")

    logits_before = page.text_content("#logits")
    page.click("#tokens .tok[data-pos='4']")
    _until(page, "document.getElementById('logit-title').textContent.includes('position 4')")
    _until(page, "document.getElementById('pattern-box').dataset.pos === '4'")
    _until(page, "document.getElementById('qk-how').textContent.startsWith('query 4 ')")
    assert page.text_content("#logits") != logits_before
    page.fill("#corrupt", "A dog ran on the rug. The dog ran on the rug.")
    page.click("#patch")
    _until(page, "document.querySelectorAll('#paths tbody tr').length > 0")
    view = {k: page.text_content(k) for k in ("#qk", "#qk-how", "#write", "#ov", "#logits", "#logit-title", "#paths")}
    url = page.url
    assert "head=L2H0" in url and "pos=4" in url and "corrupt=" in url

    # the sort: click a header, the order changes and the chosen row stays chosen
    page.click("#heads thead th:nth-child(2)")
    assert page.evaluate("document.querySelector('#heads tr.sel').dataset.head") == "L2H0"

    again, log2 = _page(browser, base)
    again.goto(url)
    _until(again, "document.getElementById('pattern-box').dataset.head === 'L2H0'")
    _until(again, "document.getElementById('logit-title').textContent.includes('position 4')")
    _until(again, "document.getElementById('qk-title').textContent.includes('L2H0: what the score')")
    _until(again, "document.querySelectorAll('#paths tbody tr').length > 0")
    assert {k: again.text_content(k) for k in view} == view  # same view from the address alone
    assert again.input_value("#text") == TEXT
    again.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    for lg in (log, log2):
        assert lg["errors"] == [] and lg["blocked"] == []


#: Every table in the views: its width, its box's, whether the box scrolls sideways; and the token-list cells.
LAYOUT = """({
  page: document.documentElement.scrollWidth, window: document.documentElement.clientWidth,
  tables: [...document.querySelectorAll('#views table')].map(t => ({
    box: t.parentElement.className, overflow: getComputedStyle(t.parentElement).overflowX,
    right: t.parentElement.getBoundingClientRect().right, card: t.closest('.card').getBoundingClientRect().right})),
  lists: [...document.querySelectorAll('#write td.toks, #ov td.toks')].map(td => ({
    wrap: getComputedStyle(td).whiteSpace, items: td.querySelectorAll('.tok-item .tk').length})),
})"""


def test_the_views_never_make_the_page_wider_than_the_window(server, browser, tmp_path):
    """The OV table (its promoted and suppressed token lists) was wider than its card and the page wider
    than the window, the lists cut at the window's edge: token lists now wrap between tokens, and a table
    still too wide scrolls sideways in its own box, inside its card."""
    base, ex = server
    page, log = _page(browser, base)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(base)
    page.fill("#text", TEXT)
    page.click("#run")
    _until(page, "document.querySelectorAll('#ov tbody tr').length > 0")
    _until(page, "document.querySelectorAll('#write tbody tr').length === 2")
    page.fill("#corrupt", "A dog ran on the rug. The dog ran on the rug.")
    page.click("#patch")
    _until(page, "document.querySelectorAll('#paths tbody tr').length > 0")
    for width in (1400, 900):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)
        lay = page.evaluate(LAYOUT)
        assert lay["page"] <= lay["window"] <= width, lay  # no sideways scrolling of the page
        for t in lay["tables"]:
            assert t["box"] == "table-scroll" and t["overflow"] == "auto" and t["right"] <= t["card"] + 0.5, t
        assert len(lay["lists"]) == 2 + 2 * page.evaluate("document.querySelectorAll('#ov tbody tr').length")
        assert all(c["wrap"] == "normal" and c["items"] >= 1 for c in lay["lists"]), lay["lists"]
        page.screenshot(path=str(tmp_path / f"explorer_{width}.png"), full_page=True)
    assert log["errors"] == [] and log["blocked"] == []


def test_hostile_text_is_shown_as_text(server, browser):
    base, ex = server
    page, log = _page(browser, base)
    page.goto(base)
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    page.fill("#text", evil)
    page.click("#run")
    _until(page, "document.querySelectorAll('#heads tbody tr').length > 0")
    _until(page, "document.querySelector('#pattern-box canvas, #pattern-box svg')")
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned === undefined")
    assert page.evaluate("document.querySelectorAll('#tokens img, #tokens script, main img').length") == 0
    assert "<img" in page.text_content("#tokens").replace("\u00b7", " ")
    assert log["blocked"] == []  # the img was never created, so never fetched


def test_long_text_wraps_and_errors_stay_in_their_card_without_breaking_save(server, browser):
    """Found by driving the page: the tokens of a long text ran on one line 27,000 px wide (the chosen one
    off-screen); a refused token to explain left the old numbers under the new request, with the message
    far above; and a refused token or patch made "Save this view" fail with that refusal."""
    base, ex = server
    page, log = _page(browser, base)
    page.set_viewport_size({"width": 700, "height": 900})
    page.goto(base)
    page.fill("#text", " ".join(f"w{i}" for i in range(60)))  # 121 tokens: more lines of them than the box shows
    page.click("#run")
    _until(page, "document.getElementById('pattern-box').dataset.head")
    box = page.evaluate(
        """(() => { const b = document.getElementById('tokens'), s = b.querySelector('.tok.sel');
        return {sw: b.scrollWidth, cw: b.clientWidth, top: s.offsetTop, h: s.offsetHeight, st: b.scrollTop, ch: b.clientHeight,
                lines: new Set([...b.querySelectorAll('.tok')].map(t => t.offsetTop)).size}; })()"""
    )
    assert box["sw"] <= box["cw"] + 1 and box["lines"] >= 5, box  # wraps between tokens
    assert box["st"] > 0, box  # the box scrolled down to the chosen (last) token ...
    assert box["st"] <= box["top"] and box["top"] + box["h"] <= box["st"] + box["ch"] + 1, box  # ... which is in sight
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.fill("#text", TEXT)
    page.click("#run")
    _until(page, "document.querySelectorAll('#logits table').length > 0")
    page.fill("#target", " hippopotamus-like")
    page.click("#explain")
    _until(page, "document.querySelector('#logits .error')")
    assert "the token to explain must be a single token" in page.text_content("#logits .error")
    assert page.query_selector("#logits table") is None  # no numbers of the previous token left under it
    with page.expect_download() as dl:
        page.click("#save")
    assert dl.value.suggested_filename.endswith(".html")

    page.fill("#target", "")
    page.click("#tokens .tok[data-pos='4']")
    _until(page, "document.getElementById('logit-title').textContent.includes('position 4')")
    page.fill("#corrupt", "The cat sat on the mat. The dog sat on the mat.")  # changes nothing up to position 4
    page.click("#patch")
    _until(page, "document.querySelector('#paths .error')")
    assert "at or before position 4" in page.text_content("#paths .error")
    with page.expect_download() as dl:
        page.click("#save")
    assert "pos4" in dl.value.suggested_filename
    assert not [e for e in log["errors"] if e.startswith("uncaught")] and log["blocked"] == []


def test_the_page_says_what_it_changed_in_the_address_and_when_the_server_is_gone(server, browser):
    base, ex = server
    page, log = _page(browser, base)
    page.goto(base + "#text=" + TEXT.replace(" ", "+") + "&head=L99H0&pos=999")
    _until(page, "document.getElementById('pattern-box').dataset.head")
    notes = page.text_content("#notes")
    assert "L99H0 is not a head of" in notes and "position 999 is past the text's" in notes
    page.route("**/api/**", lambda r: r.abort("connectionrefused"))  # the server stopped
    page.click("#heads tbody tr[data-head='L1H1']")
    _until(page, "document.querySelector('#pattern-box .error')")
    assert "no answer from the headscope server" in page.text_content("#status")
    assert "Start it again" in page.text_content("#pattern-box")


def test_paths_whose_gap_is_the_wrong_way_round_show_changes_under_a_warning(server, browser, tmp_path):
    """A working patch with its two texts swapped (the wrong token named): the corrupted run favours the token
    explained more than the text's run, so the page shows the saved page's warning and the changes in the metric,
    not shares of that gap; the wrong token is in the address, and a reload shows the same."""
    base, ex = server
    corrupt = "A dog ran on the rug. The dog ran on the rug."
    wrong = ex.paths_view(TEXT, 6, corrupt)["wrong"]  # the working patch's wrong token
    back = ex.paths_view(corrupt, 6, TEXT, wrong=wrong)  # the same patch, the texts swapped
    assert not back["normalised_meaningful"] and back["warning"]
    page, log = _page(browser, base)
    page.goto(base)
    page.fill("#text", corrupt)
    page.click("#run")
    _until(page, "document.getElementById('pattern-box').dataset.head")
    page.click("#tokens .tok[data-pos='6']")
    _until(page, "document.getElementById('logit-title').textContent.includes('position 6')")
    page.fill("#corrupt", TEXT)
    page.fill("#wrong", wrong)
    page.click("#patch")
    _until(page, "document.querySelectorAll('#paths tbody tr').length > 0")
    assert page.text_content("#paths .gap-warning") == back["warning"]
    assert page.evaluate("getComputedStyle(document.querySelector('#paths .gap-warning')).display") != "none"
    heads = page.evaluate("[...document.querySelectorAll('#paths thead th')].map(th => th.textContent)")
    assert heads == ["sender → logits", "change in logit_diff"]
    cells = page.evaluate(
        "[...document.querySelectorAll('#paths tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [c[0] for c in cells] == [p["sender"] for p in back["paths"]]  # the rows and order of the API's paths
    assert all(abs(float(c[1]) - p["change"]) <= 5e-4 + 1e-9 for c, p in zip(cells, back["paths"]))  # 3 places
    page.locator(".card:has(#paths)").screenshot(path=str(tmp_path / "explorer_gap_warning.png"))
    with page.expect_download() as dl:  # the saved page patches with the same wrong token: the same warning
        page.click("#save")
    saved = open(dl.value.path(), encoding="utf-8").read()
    assert "change in logit_diff</th>" in saved and "Not meaningful as shares of the gap:" in saved

    again, log2 = _page(browser, base)
    again.goto(page.url)  # the wrong token is in the address: the same patch comes back
    _until(again, "document.querySelectorAll('#paths tbody tr').length > 0")
    assert again.input_value("#wrong") == wrong and again.text_content("#paths") == page.text_content("#paths")
    for lg in (log, log2):
        assert lg["errors"] == [] and lg["blocked"] == []
