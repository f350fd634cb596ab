"""pyqtgraph charts: the live training curves and the token-length histogram.

pyqtgraph is imported here only, when a page that draws a chart is built, so it
does not slow the window's first show.

The live charts are redrawn on the GUI thread, so what one redraw costs is a
stall of the window. Measured with ``bench/gui_responsiveness.py`` and a probe of
``TrainingCharts`` alone (60 updates, 1100×380 px, offscreen raster, load ≈ 9 on 2
cores): pyqtgraph's default grid (tick lines of three levels stretched across the
plot) made each repaint ~9 ms of ``QPicture.play``, and a new point caused four
repaints (the auto-range was recomputed while painting, which moved the axes and
the linked plot and asked for another paint): 23–30 ms of GUI CPU per point. With
the grid drawn from the major and minor ticks only, the ranges settled before the
paint and at most one redraw per ``REDRAW_MS``, it is 7–11 ms.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from app.theme import ThemeManager

pg.setConfigOptions(antialias=True)
REDRAW_MS = 100  # live charts redraw at most 10 times a second, however fast reports come
GRID_TICK_LEVELS = 1  # grid lines at major and minor ticks only (pyqtgraph's default 2 adds a costly third level)


def scientific(value: float) -> str:
    """A tick label for a learning rate: 0, 0.01, 5e-4, 1.5e-5 (never an SI prefix or 0.0000)."""
    if value == 0 or not np.isfinite(value):
        return "0"
    exponent = int(np.floor(np.log10(abs(value))))
    if -2 <= exponent <= 3:
        return f"{value:.3g}"
    mantissa = round(value / 10.0 ** exponent, 2)
    if abs(mantissa) >= 10:  # 9.999e-4 rounds up to 10e-4
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


class StepAxis(pg.AxisItem):
    """A step axis: whole steps only (no 0.5 steps, no "step (x0.001)")."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802, N803 (pyqtgraph's names)
        levels = super().tickSpacing(minVal, maxVal, size)
        kept = [(max(1.0, round(spacing)), offset) for spacing, offset in levels if spacing >= 1]
        return kept or [(1.0, 0.0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [f"{int(round(v)):,}" for v in values]


class ScientificAxis(pg.AxisItem):
    """A value axis labelled 1e-3, 5e-4… (a learning rate of 1e-3 is not "0" with a ×0.001 prefix)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [scientific(v) for v in values]


def step_range(steps) -> tuple[float, float]:
    """The x range for charts of these steps: the steps drawn, and at least 0…2 around a
    lone point (pyqtgraph's own range for one point is ±0.5, or −400…400 once linked)."""
    steps = [s for s in steps if np.isfinite(s)]
    if not steps:
        return 0.0, 10.0
    lo, hi = min(steps), max(steps)
    if hi - lo < 2:
        lo, hi = max(0.0, lo - 1), hi + 1
    return float(lo), float(hi)


def value_range(values, floor: float | None = None) -> tuple[float, float] | None:
    """A y range that shows these values with a margin; a constant (one point, a constant
    learning rate) gets ±10% of its size around it rather than pyqtgraph's ±0.5."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


def _style_plot(plot: pg.PlotWidget, title: str, left: str) -> None:
    c = ThemeManager.colors()
    plot.setBackground(c["base"])
    item = plot.getPlotItem()
    item.setTitle(title, color=c["text"], size="10pt")
    for axis in ("left", "bottom"):
        ax = item.getAxis(axis)
        ax.setPen(pg.mkPen(c["border"]))
        ax.setTextPen(pg.mkPen(c["secondary"]))
    item.setLabel("left", left, color=c["secondary"])
    item.showGrid(x=True, y=True, alpha=0.15)
    for axis in ("left", "bottom"):
        item.getAxis(axis).setStyle(maxTickLevel=GRID_TICK_LEVELS)


class TrainingCharts(QWidget):
    """Loss (raw + smoothed, validation points) and learning rate, sharing the step axis; for
    DPO/ORPO runs also the validation reward margin and accuracy (hidden until there are any).

    :meth:`set_history` may be called at any rate: the first call draws at once, later
    ones within ``REDRAW_MS`` are merged into one redraw at the end of that interval.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from PySide6.QtWidgets import QHBoxLayout

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.loss_plot = pg.PlotWidget(axisItems={"bottom": StepAxis("bottom")})
        self.lr_plot = pg.PlotWidget(axisItems={"bottom": StepAxis("bottom"), "left": ScientificAxis("left")})
        self.lr_plot.setXLink(self.loss_plot)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(self.lr_plot, 2)
        self.reward_plot = pg.PlotWidget(axisItems={"bottom": StepAxis("bottom")})
        self.reward_plot.setXLink(self.loss_plot)
        self.reward_plot.setVisible(False)
        layout.addWidget(self.reward_plot, 2)
        self.reward_legend = self.reward_plot.getPlotItem().addLegend(offset=(10, 10))  # top left: margins rise
        self.margin = self.reward_plot.plot(name="margin", symbol="o", symbolSize=6)
        self.accuracy = self.reward_plot.plot(name="accuracy", symbol="s", symbolSize=6)
        self.legend = self.loss_plot.getPlotItem().addLegend(offset=(-10, 10))
        self.raw = self.loss_plot.plot(name="train (raw)")
        self.smooth = self.loss_plot.plot(name="train (smoothed)")
        self.valid = self.loss_plot.plot(name="validation", pen=None, symbol="o", symbolSize=7)
        self.lr = self.lr_plot.plot()
        for curve in (self.raw, self.smooth, self.lr):  # long runs: draw what is visible, a point per pixel
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")
        self._pending: tuple | None = None
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._on_redraw_due)
        self.apply_theme()

    def apply_theme(self) -> None:
        c = ThemeManager.colors()
        _style_plot(self.loss_plot, "Loss", "")
        _style_plot(self.lr_plot, "Learning rate", "")
        _style_plot(self.reward_plot, "Validation rewards", "")
        self.reward_plot.getPlotItem().setLabel("bottom", "step", color=c["secondary"])
        for series, color in ((self.margin, c["series_1"]), (self.accuracy, c["series_4"])):
            series.setPen(pg.mkPen(color, width=2))
            series.setSymbolBrush(pg.mkBrush(color))
            series.setSymbolPen(pg.mkPen(c["base"], width=1))
        self.reward_legend.setLabelTextColor(c["secondary"])
        self.loss_plot.getPlotItem().setLabel("bottom", "step", color=c["secondary"])
        self.lr_plot.getPlotItem().setLabel("bottom", "step", color=c["secondary"])
        self.raw.setPen(pg.mkPen(c["series_3"], width=1))
        self.smooth.setPen(pg.mkPen(c["series_1"], width=2.2))
        self.valid.setSymbolBrush(pg.mkBrush(c["series_2"]))
        self.valid.setSymbolPen(pg.mkPen(c["base"], width=1.5))
        self.lr.setPen(pg.mkPen(c["series_4"], width=2))
        self.legend.setLabelTextColor(c["secondary"])

    def set_history(self, steps, losses, smoothed_losses, val_steps, val_losses, learning_rates) -> None:
        history = (steps, losses, smoothed_losses, val_steps, val_losses, learning_rates)
        if self._redraw_timer.isActive():
            self._pending = history  # drawn when the interval ends
            return
        self._draw(history)
        self._redraw_timer.start()

    def set_rewards(self, steps, margins, accuracies) -> None:
        """Reward margin (chosen − rejected) and accuracy (share of pairs chosen wins, 0–1)."""
        self.margin.setData(np.asarray(steps, float), np.asarray(margins, float))
        self.accuracy.setData(np.asarray(steps, float), np.asarray(accuracies, float))
        self.reward_plot.setVisible(bool(len(steps)))
        self._settle_ranges(self.reward_plot)

    def clear(self) -> None:
        self._pending = None
        self._redraw_timer.stop()
        self.set_history([], [], [], [], [], [])
        self.set_rewards([], [], [])

    def _on_redraw_due(self) -> None:
        if self._pending is not None:
            history, self._pending = self._pending, None
            self._draw(history)
            self._redraw_timer.start()

    def _draw(self, history) -> None:
        steps, losses, smoothed_losses, val_steps, val_losses, learning_rates = history
        x = np.asarray(steps, float)
        self.raw.setData(x, np.asarray(losses, float))
        self.smooth.setData(x, np.asarray(smoothed_losses, float))
        self.valid.setData(np.asarray(val_steps, float), np.asarray(val_losses, float))
        self.lr.setData(x, np.asarray(learning_rates, float))
        # explicit ranges: whole steps, a lone point in the middle, a constant learning rate as
        # the line it is (0 at the bottom: a schedule decays towards it), never pyqtgraph's ±0.5
        self.loss_plot.setXRange(*step_range(list(steps) + list(val_steps)), padding=0.02)
        loss_range = value_range(list(losses) + list(val_losses))
        if loss_range:
            self.loss_plot.setYRange(*loss_range, padding=0)
        rates = [v for v in learning_rates if np.isfinite(v)]
        self.lr_plot.setYRange(0, (max(rates) if rates and max(rates) > 0 else 1e-3) * 1.15, padding=0)
        self._settle_ranges(self.loss_plot, self.lr_plot)

    @staticmethod
    def _settle_ranges(*plots) -> None:
        """Settle the auto-ranges now rather than while painting: pyqtgraph defers them to the
        paint, where a range change (and the linked step axis) asks for another paint."""
        for plot in plots:
            view = plot.getPlotItem().getViewBox()
            if view._autoRangeNeedsUpdate:
                view.updateAutoRange()


class RewardCharts(QWidget):
    """GRPO's sampled rewards by step: the mean reward and each reward function's mean (left),
    the KL to the base model (right). Fed from ``RewardHistory`` (app/controllers/training.py)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from PySide6.QtWidgets import QHBoxLayout

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.reward_plot = pg.PlotWidget()
        self.kl_plot = pg.PlotWidget()
        self.kl_plot.setXLink(self.reward_plot)
        layout.addWidget(self.reward_plot, 3)
        layout.addWidget(self.kl_plot, 2)
        self.legend = self.reward_plot.getPlotItem().addLegend(offset=(10, 10))
        self.mean = self.reward_plot.plot(name="mean reward", symbol="o", symbolSize=5)
        self.functions: dict[str, pg.PlotDataItem] = {}
        self.kl = self.kl_plot.plot()
        self.apply_theme()

    def apply_theme(self) -> None:
        c = ThemeManager.colors()
        _style_plot(self.reward_plot, "Reward (sampled answers)", "")
        _style_plot(self.kl_plot, "KL to the base model", "")
        for plot in (self.reward_plot, self.kl_plot):
            plot.getPlotItem().setLabel("bottom", "step", color=c["secondary"])
        self.mean.setPen(pg.mkPen(c["series_1"], width=2.4))
        self.mean.setSymbolBrush(pg.mkBrush(c["series_1"]))
        self.mean.setSymbolPen(pg.mkPen(c["base"], width=1))
        palette = [c["series_2"], c["series_3"], c["series_4"]]
        for k, curve in enumerate(self.functions.values()):
            curve.setPen(pg.mkPen(palette[k % len(palette)], width=1.4, style=pg.QtCore.Qt.PenStyle.DashLine))
        self.kl.setPen(pg.mkPen(c["series_4"], width=2))
        self.legend.setLabelTextColor(c["secondary"])

    def set_history(self, steps, mean_rewards, rewards: dict, kls) -> None:
        x = np.asarray(steps, float)
        self.mean.setData(x, np.asarray(mean_rewards, float))
        for name, values in rewards.items():
            if name not in self.functions:
                self.functions[name] = self.reward_plot.plot(name=name)
                self.apply_theme()
            self.functions[name].setData(x, np.asarray(values, float))
        kl = np.asarray(kls, float)
        finite = np.isfinite(kl)
        self.kl.setData(x[finite], kl[finite])
        self.kl_plot.setVisible(bool(finite.any()))
        TrainingCharts._settle_ranges(self.reward_plot, self.kl_plot)


class LengthHistogram(pg.PlotWidget):
    """Tokens per example as bars, with the max-sequence-length cut-off as a dashed line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bars: pg.BarGraphItem | None = None
        self.cutoff = pg.InfiniteLine(angle=90, movable=False)
        self.addItem(self.cutoff)
        self.cutoff.hide()
        # a limit far beyond the longest example is named under the axis, not over the bars
        self.cutoff_note = ""
        self.apply_theme()

    def apply_theme(self) -> None:
        c = ThemeManager.colors()
        _style_plot(self, "Tokens per example", "examples")
        self._label_axis()
        self.cutoff.setPen(pg.mkPen(c["danger"], width=2, style=pg.QtCore.Qt.PenStyle.DashLine))
        if self.bars is not None:
            self.bars.setOpts(brush=pg.mkBrush(c["series_1"]), pen=pg.mkPen(c["base"]))

    def _label_axis(self) -> None:
        c = ThemeManager.colors()
        note = f" <span style='color:{c['danger']}'>{self.cutoff_note}</span>" if self.cutoff_note else ""
        self.getPlotItem().setLabel("bottom", "tokens" + note, color=c["secondary"])

    def set_lengths(self, lengths: list[int], max_seq_length: int) -> None:
        """Bins span the data; the cut-off line is drawn where it falls, or named in the
        corner when it lies far beyond the longest example (it would squash the bars)."""
        c = ThemeManager.colors()
        if self.bars is not None:
            self.removeItem(self.bars)
            self.bars = None
        self.cutoff_note = ""
        self._label_axis()
        if not lengths:
            self.cutoff.hide()
            return
        longest = max(lengths)
        show_cutoff = max_seq_length <= 1.5 * longest
        top = max(longest, max_seq_length) if show_cutoff else longest
        bins = min(40, max(5, len(set(lengths))))
        counts, edges = np.histogram(lengths, bins=bins, range=(0, top * 1.02))
        width = edges[1] - edges[0]
        self.bars = pg.BarGraphItem(x0=edges[:-1], height=counts, width=width * 0.92,
                                    brush=pg.mkBrush(c["series_1"]), pen=pg.mkPen(c["base"]))
        self.addItem(self.bars)
        self.cutoff.setValue(max_seq_length)
        self.cutoff.setVisible(show_cutoff)
        if not show_cutoff:
            self.cutoff_note = f"· limit {max_seq_length:,} tokens, beyond the longest →"
            self._label_axis()
        self.setXRange(0, top * 1.05, padding=0)
        self.setYRange(0, max(counts) * 1.1, padding=0)


class RunCurves(pg.PlotWidget):
    """Loss curves of several runs overlaid, one colour per run: each run's raw training loss
    (thin, faint), its smoothed training loss (the line) and its validation loss (dashed
    points), each labelled in the legend."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, axisItems={"bottom": StepAxis("bottom")})
        self.legend = self.getPlotItem().addLegend(offset=(-10, 10))
        self.items: list = []
        self._curves: dict = {}
        self.apply_theme()

    def _colors(self) -> list[str]:
        c = ThemeManager.colors()
        return [c["series_1"], c["series_2"], c["series_4"], "#af52de", "#ff2d55", "#5ac8fa", c["series_3"]]

    def apply_theme(self) -> None:
        c = ThemeManager.colors()
        _style_plot(self, "Loss of the selected runs", "")
        self.getPlotItem().setLabel("bottom", "step", color=c["secondary"])
        self.legend.setLabelTextColor(c["text"])
        self.set_curves(self._curves)

    def set_curves(self, curves: dict) -> None:
        """``curves``: {label: {"step": […], "loss": […], "val_step": […], "val_loss": […]}}."""
        from app.controllers.training import smoothed

        self._curves = dict(curves)
        for item in self.items:
            self.removeItem(item)
        self.items = []
        self.legend.clear()
        colors = self._colors()
        all_steps, all_losses = [], []
        for k, (label, curve) in enumerate(curves.items()):
            color = colors[k % len(colors)]
            all_steps += list(curve["step"]) + list(curve["val_step"])
            all_losses += list(curve["loss"]) + list(curve["val_loss"])
            if curve["step"]:
                x = np.asarray(curve["step"], float)
                faint = pg.mkColor(color)
                faint.setAlpha(90)
                self.items.append(self.plot(x, np.asarray(curve["loss"], float), pen=pg.mkPen(faint, width=1),
                                            name=f"{label} · train (raw)"))
                self.items.append(self.plot(x, np.asarray(smoothed(curve["loss"]), float),
                                            pen=pg.mkPen(color, width=2), name=f"{label} · train (smoothed)"))
            if curve["val_step"]:
                self.items.append(self.plot(np.asarray(curve["val_step"], float), np.asarray(curve["val_loss"], float),
                                            pen=pg.mkPen(color, width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                                            symbol="o", symbolSize=6, symbolBrush=pg.mkBrush(color),
                                            symbolPen=pg.mkPen(color), name=f"{label} · validation"))
        if all_steps:
            self.setXRange(*step_range(all_steps), padding=0.02)
            loss_range = value_range(all_losses)
            if loss_range:
                self.setYRange(*loss_range, padding=0)
