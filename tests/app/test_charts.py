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


def test_a_constant_learning_rate_is_drawn_at_its_value_with_scientific_ticks(qtbot):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.resize(900, 300)
    charts.show()
    charts.set_history(*history(20))  # lr 1e-3 at every step
    low, high = charts.lr_plot.getPlotItem().getViewBox().viewRange()[1]
    assert low == 0 and 1e-3 < high < 1.3e-3  # the line near the top, not a flat 0 on a ±0.4 axis
    axis = charts.lr_plot.getPlotItem().getAxis("left")
    assert axis.tickStrings([0, 5e-4, 1e-3, 2.5e-5, 0.01], 1, 1) == ["0", "5e-4", "1e-3", "2.5e-5", "0.01"]
    assert axis.autoSIPrefix is False and axis.labelText == ""


def test_step_axes_tick_whole_steps_and_one_point_has_a_sane_range(qtbot):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.resize(900, 300)
    charts.show()
    charts.set_history([1], [2.5], [2.5], [], [], [1e-3])  # one report
    view = charts.loss_plot.getPlotItem().getViewBox()
    (x_low, x_high), (y_low, y_high) = view.viewRange()
    assert -0.2 <= x_low <= 1 <= x_high <= 2.2  # around step 1, not −400…400
    assert 2.0 < y_low < 2.5 < y_high < 3.0  # ±10 %, not ±0.5 (or worse)
    axis = charts.loss_plot.getPlotItem().getAxis("bottom")
    for _spacing, values in axis.tickValues(0, 2, 600):
        assert all(float(v).is_integer() for v in values)  # no step 0.5
    assert axis.tickStrings([1.0, 2.0, 1000.0], 1, 1) == ["1", "2", "1,000"]
    assert axis.autoSIPrefix is False  # never "step (x0.001)"


def test_the_histogram_names_a_far_limit_under_the_axis_not_over_the_bars(qtbot):
    from app.widgets.charts import LengthHistogram

    histogram = LengthHistogram()
    qtbot.addWidget(histogram)
    histogram.set_lengths([50, 60, 70, 80], 4096)
    assert not histogram.cutoff.isVisible()
    assert "limit 4,096 tokens" in histogram.getPlotItem().getAxis("bottom").labelText
    histogram.set_lengths([50, 60, 70, 80], 64)
    assert "limit" not in histogram.getPlotItem().getAxis("bottom").labelText  # the dashed line shows it
