"""A new report section is two new files: a result type and a view module, no headscope file touched.

The test writes both into a temporary package outside headscope, imports them, and finds the
section, its nav link, the subtitle, the legend entry, the notebook view, a figure and the
terminal table on a page and in a notebook; the lookup walks the type's MRO.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

import headscope
from headscope.render.lookup import view_of, view_of_type
from headscope.render.page import Report
from headscope.render.view_base import View
from headscope.results import Result
from headscope.results.base import rounded

PACKAGE = Path(headscope.__file__).parent

RESULT_MODULE = '''
from dataclasses import dataclass

import numpy as np

from headscope.results.base import Result, rounded


@dataclass
class CircuitPaths(Result):
    """A made-up analysis: the strength of a few paths between heads."""

    model: dict
    paths: dict[str, float]

    def to_dict(self) -> dict:
        return {"model": self.model, "paths": {k: rounded(v) for k, v in self.paths.items()}}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"path": list(self.paths), "strength": list(self.paths.values())})

    def plot(self):
        return self._figure("bars")
'''

VIEW_MODULE = """
from headscope.render.html import table_html
from headscope.render.lookup import register
from headscope.render.view_base import Section, View

from .circuit_result import CircuitPaths


def bars(result):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.bar(list(result.paths), list(result.paths.values()))
    return fig


@register(CircuitPaths)
class CircuitPathsView(View):
    figures = {"bars": bars}

    def sections(self, result):
        rows = [[k, v] for k, v in result.paths.items()]  # table_html escapes text cells
        return [Section("circuit-paths", "Circuit paths: strongest routes", table_html(["path", "strength"], rows))]

    def legend(self, result):
        return {"path strength": "How much of the later head's input comes along this path (made up)."}

    def subtitle(self, result):
        return f"{len(result.paths)} circuit paths"

    def title(self, result):
        return "Circuit paths"

    def terminal(self, result, console):
        best = max(result.paths, key=result.paths.get)
        console.print(f"strongest circuit path: {best} ({result.paths[best]:.3f})")
"""


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def new_analysis(tmp_path, monkeypatch):
    """The two new files, in a package of their own (``circuitpkg``), imported as a user would."""
    pkg = tmp_path / "circuitpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "circuit_result.py").write_text(textwrap.dedent(RESULT_MODULE))
    (pkg / "circuit_view.py").write_text(textwrap.dedent(VIEW_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    result_mod = importlib.import_module("circuitpkg.circuit_result")
    importlib.import_module("circuitpkg.circuit_view")  # registering is importing
    yield result_mod.CircuitPaths
    for name in [m for m in sys.modules if m.startswith("circuitpkg")]:
        del sys.modules[name]


def test_a_new_result_and_view_make_a_page_section_with_no_headscope_file_changed(new_analysis):
    before = _tree_digest(PACKAGE)
    res = new_analysis({"name": "toy"}, {"L0H1 -> L1H2 (K)": 0.4213, "L0H3 -> L1H2 (V)": 0.12})
    page = Report({"name": "toy", "n_layers": 2, "n_heads": 4}, [res]).to_html()
    assert '<section id="circuit-paths"><h2>Circuit paths: strongest routes</h2>' in page
    assert '<a href="#circuit-paths">Circuit paths</a>' in page  # the nav link (title up to its colon)
    assert "2 layers × 4 heads; 2 circuit paths" in page  # the subtitle
    assert "<dt>path strength</dt>" in page  # the legend entry
    assert "L0H1 -&gt; L1H2 (K)" in page and "0.421" in page
    nb = res._repr_html_()  # the notebook view goes through the same lookup
    assert "circuit-paths" in nb and "path strength" in nb
    fig = res.plot()
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.4213, 0.12])
    out = io.StringIO()
    view_of(res).terminal(res, Console(file=out, width=100))
    assert out.getvalue().strip() == "strongest circuit path: L0H1 -> L1H2 (K) (0.421)"
    assert res.to_json() and rounded(0.4213, 2) == 0.42
    assert _tree_digest(PACKAGE) == before


def test_the_lookup_walks_the_types_mro(new_analysis):
    class Refined(new_analysis):  # a subclass without a view of its own gets its parent's
        pass

    assert type(view_of_type(Refined)).__name__ == "CircuitPathsView"

    class Bare(Result):  # no view anywhere up the MRO: the plain table view
        def to_frame(self):
            import pandas as pd

            return pd.DataFrame({"a": [1.5]})

    assert type(view_of(Bare())) is View
    assert "<h4>Bare</h4>" in Bare()._repr_html_()
    with pytest.raises(KeyError, match="draws no figure 'x'"):
        view_of(Bare()).figure(Bare(), "x")


def test_every_headscope_result_has_its_own_view():
    import headscope.results as results

    for name in results.__all__:
        cls = getattr(results, name)
        if isinstance(cls, type) and issubclass(cls, Result) and cls is not Result:
            assert type(view_of_type(cls)) is not View, f"{name} has no view in headscope/render/views"


def test_a_page_claims_an_anchor_once_and_keeps_result_order(new_analysis):
    first = new_analysis({}, {"first path": 1.0})
    second = new_analysis({}, {"second path": 2.0})
    page = Report({"name": "m"}, [first, second])
    sections = page.sections()
    assert [s.anchor for s in sections] == ["circuit-paths", "legend"]  # the first result keeps the anchor
    assert "first path" in sections[0].html and "second path" not in page.to_html()
    assert page.subtitle() == "1 circuit paths; 1 circuit paths"  # every result still says what it is
    assert [s.anchor for s in Report({"name": "m"}, []).sections()] == ["legend"]


def test_the_one_rounding_rule_rounds_the_value_not_its_float32_approximation():
    """Every result rounds through results.base.rounded: the float64 value, correctly rounded. The old
    ICL rounding (np.round on the float32 array) gave 5.70344 for this loss, whose value is 5.7034349...."""
    import numpy as np

    loss = np.array([5.703434944152832], dtype=np.float32)
    assert float(loss[0]) < 5.703435  # the value itself rounds down at 5 decimals
    assert rounded(loss, 5) == [5.70343]
    assert float(np.round(loss, 5)[0]) == pytest.approx(5.70344, abs=1e-6)  # what float32 rounding gave
    assert rounded([float("nan"), 1.23456789], 4) == [None, 1.2346]


def test_figure_alt_text_is_the_figures_titles():
    """A page's figures carry alt text from their own titles, so a screen reader says what each one shows."""
    import matplotlib.pyplot as plt

    from headscope.render.html import figure_html

    fig, axes = plt.subplots(1, 8)
    fig.suptitle("Induction score <by layer>")
    for i, ax in enumerate(axes):
        ax.set_title(f"layer {i}")
    html = figure_html(fig)
    assert (
        'alt="Induction score &lt;by layer&gt;: layer 0; layer 1; layer 2; layer 3; layer 4; layer 5; and 2 more panels"'
        in html
    )
    fig, _ = plt.subplots()
    assert 'alt="figure"' in figure_html(fig)  # untitled: still not empty
    fig, _ = plt.subplots()
    assert 'alt="the caption wins"' in figure_html(fig, caption="the caption wins")


def test_a_scan_without_the_causal_check_shows_and_defines_no_ablation(tiny_gpt2):
    """The explorer's saved page and `--no-ablation` runs: no Δloss column, no ablation legend entry."""
    import io

    from rich.console import Console

    from headscope.render.views.induction_view import (
        induction_definitions,
        induction_sections,
        print_induction,
        top_heads_html,
    )
    from headscope.scan.induction_scan import scan_induction

    kw = dict(seq_len=6, batch=3, sample=False, progress=False)
    without = scan_induction(tiny_gpt2, ablate=False, **kw)
    with_check = scan_induction(tiny_gpt2, ablate=True, top_k=2, **kw)
    assert "ablation Δloss" not in induction_definitions(without)
    assert "ablation Δloss" in induction_definitions(with_check)
    assert "Δloss" not in top_heads_html(without) and "Δloss" in top_heads_html(with_check)

    def terminal(res):
        out = io.StringIO()
        print_induction(Console(file=out, width=200), res)
        return out.getvalue()

    assert "Δloss" not in terminal(without) and "ablation:" not in terminal(without)
    loss_text = {key: body for key, _, body in induction_sections(without)}["loss"]
    assert "causal check below" not in loss_text and "made no causal check" in loss_text
    assert "causal check below" in {key: body for key, _, body in induction_sections(with_check)}["loss"]
    assert "Δloss [95%]" in terminal(with_check) and "ablation:" in terminal(with_check)


def test_top_heads_table_leads_with_the_causal_check_under_short_headers(tiny_gpt2):
    """The report's widest table fits the page: the causal check right after the head's name, each score under
    the registry's short header with its label in the tooltip and in the line under the table; sorting reads
    the cells' data-v, which the reordering keeps."""
    import re

    from headscope.render.views.induction_view import top_heads_html
    from headscope.scan.induction_scan import scan_induction
    from headscope.scores import score

    kw = dict(seq_len=6, batch=3, sample=False, progress=False)
    res = scan_induction(tiny_gpt2, ablate=True, top_k=2, **kw)
    html = top_heads_html(res)
    heads = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html)
    assert heads[:3] == [
        "head",
        '<abbr title="ablation Δloss: change in later-repeat loss when the head is ablated, nats [95% interval]">'
        "Δloss, nats [95%]</abbr>",
        '<abbr title="Δ first repeat: change in first-repeat loss when the head is ablated, nats">Δfirst, nats</abbr>',
    ]
    order = res.score_order()
    for name, th in zip(order, heads[3:-1], strict=True):
        s = score(name)
        assert th == (f'<abbr title="{s.label}">{s.header}</abbr>' if s.header != s.label else s.header), th
    assert heads[-1] == "roles"
    key = html.split("</table>")[1]
    assert "prev = previous-token" in key and "Δloss = change in later-repeat loss" in key
    # the first row: the head, its Δloss sorted by its value, its Δ first repeat, then the scores
    (l, h, _), *_ = res.top_heads("induction", 2)
    e = res.ablation_of(l, h)
    cells = re.findall(r'<td[^>]*data-v="([^"]*)"', html.split("<tbody>")[1].split("</tr>")[0])
    assert float(cells[0]) == round(e["loss_increase"], 3) and float(cells[1]) == round(e["first_repeat_increase"], 3)
    assert float(cells[2]) == round(float(res.scores["induction"][l, h]), 3)
    # without the causal check: no causal column and no word of it under the table
    without = top_heads_html(scan_induction(tiny_gpt2, ablate=False, **kw))
    assert re.findall(r"<th(?: [^>]*)?>(.*?)</th>", without)[1] != heads[1] and "Δ" not in without


def test_an_induction_scan_names_the_roles_it_did_not_measure_instead_of_their_thresholds(tiny_gpt2):
    """`induction` listed "attention-sink ≥ 0.3" among its thresholds though it never measures sinks, so its
    page said "46 of 270 heads take a role" where `headscope report` said 218 with no word why."""
    from headscope.render.views.induction_view import settings_html
    from headscope.scan import scan_induction

    res = scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=2, ablate=False, sample=False, progress=False)
    assert "attention_sink" in res.thresholds and "attention_sink" not in res.scores
    console = Console(record=True, width=200, color_system=None)
    view_of(res).terminal(res, console)
    text = console.export_text()
    assert "attention-sink ≥" not in text and "Not measured by this run: attention-sink" in text
    assert "induction ≥ 0.4" in text
    assert "attention-sink: not measured" in settings_html(res)
    assert "Not measured by this run: attention-sink" in view_of(res).legend(res)["roles"]


def test_the_page_footer_names_only_what_the_page_holds(tiny_gpt2):
    """A circuit, heads or logits page's footer spoke of interactive QK scores and qk.json it did not have."""
    from headscope.scan import scan_induction

    res = scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=2, ablate=False, sample=False, progress=False)
    footer = Report(model=tiny_gpt2, results=[res]).notes_html()
    assert "QK" not in footer and "qk.json" not in footer and "logits.json" not in footer
    assert "(scores.json) have full precision" in footer
