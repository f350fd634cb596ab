"""The live training charts: bursts of reports are merged into few redraws, and the
grid stays at two tick levels (the third made every repaint ~9 ms slower)."""

from __future__ import annotations

import pytest

pytest.importorskip("pyqtgraph")

from app.widgets import charts as charts_module  # noqa: E402
from app.widgets.charts import TrainingCharts  # noqa: E402


def history(n: int):
    steps = list(range(1, n + 1))
    losses = [3.0 / k for k in steps]
    return steps, losses, losses, [n], [losses[-1]], [1e-3] * n


def test_a_burst_of_reports_is_drawn_once_now_and_once_at_the_end(qtbot, monkeypatch):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.resize(900, 300)
    charts.show()
    draws = []
    original = TrainingCharts._draw
    monkeypatch.setattr(TrainingCharts, "_draw", lambda self, h: (draws.append(len(h[0])), original(self, h)))
    for n in range(1, 51):  # 50 reports faster than REDRAW_MS
        charts.set_history(*history(n))
    assert draws == [1]  # the first at once; the rest wait for the interval to end
    qtbot.waitUntil(lambda: len(charts.raw.getData()[0]) == 50, timeout=2000)
    assert draws == [1, 50]  # one more redraw, with the latest history
    assert list(charts.valid.getData()[0]) == [50]
    # the auto-range was settled before any paint: the whole run is in view
    x_range = charts.loss_plot.getPlotItem().getViewBox().viewRange()[0]
    assert x_range[0] <= 1 and x_range[1] >= 50


def test_clear_drops_a_pending_redraw(qtbot):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.set_history(*history(3))
    charts.set_history(*history(4))  # pending
    charts.clear()
    assert charts._pending is None  # the 4-step history will not be drawn over the cleared chart
    x, _ = charts.raw.getData()
    assert x is None or len(x) == 0


def test_the_grid_draws_two_tick_levels(qtbot):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    for plot in (charts.loss_plot, charts.lr_plot):
        for name in ("left", "bottom"):
            assert plot.getPlotItem().getAxis(name).style["maxTickLevel"] == charts_module.GRID_TICK_LEVELS == 1
