"""GUI responsiveness: how fast the window shows, and the longest stall of the GUI
thread while training runs (through the supervisor) and while chat streams.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_responsiveness.py [--iters 20] [--tokens 64]

(a) launch → window shown: a child interpreter is started with the parent's clock
    reading; it builds the real MainWindow, shows it, and prints the time at its
    first paint (an event filter on the window's Expose/Paint). Repeated 3 times;
    median reported. Goal < 2 s.
(b) GUI-thread stalls: a QTimer fires every 10 ms and records the gap between
    firings; "stall" = the longest gap minus the 10 ms period. On a shared machine a
    gap also holds time spent waiting for a CPU, so the GUI thread's own CPU time
    within each gap is recorded too ("longest GUI-thread CPU per gap"): the part of
    a stall our code causes on the GUI thread, whatever the load. Measured idle (the
    baseline, same process), while the real trainer runs the demo model on the pirate
    sample for ``--iters`` steps (every event parsed and charted on the GUI thread),
    while the chat model loads, and while the tuned model streams ``--tokens`` tokens
    beside the base. Goal < 50 ms.

The chat model lives in a child process (app/jobs/chat_process.py); with
``MLX_LORA_CHAT_IN_PROCESS=1`` it lives in a thread of the app instead, as it did
before — run both for a same-machine before/after. ``--skip-launch`` leaves out (a).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PERIOD_MS = 10
T0 = time.perf_counter()


class Trace:
    """--trace: slow GUI events and slow C calls in workers, with their times (s since T0)."""

    gui_events: list = []  # (start, ms, what)
    worker_calls: list = []  # (start, ms, what)
    _stacks = None

    @classmethod
    def install(cls):
        import threading

        from PySide6.QtCore import QEvent
        from PySide6.QtWidgets import QApplication

        from app.jobs.workers import Job

        class TracingApplication(QApplication):
            depth = 0

            def notify(self, receiver, event):  # noqa: N802
                TracingApplication.depth += 1
                start = time.perf_counter()
                try:
                    return super().notify(receiver, event)
                finally:
                    TracingApplication.depth -= 1
                    took = (time.perf_counter() - start) * 1000
                    if took > 8 and TracingApplication.depth == 0:
                        cls.gui_events.append((start - T0, took, f"{type(receiver).__name__} "
                                                                  f"{QEvent.Type(event.type()).name}"))

        cls._stacks = threading.local()

        def hook(frame, what, arg):
            stack = cls._stacks.__dict__.setdefault("calls", [])
            if what in ("call", "c_call") and stack:
                stack[-1][3] = False  # the enclosing C call runs Python: not a leaf
            if what == "c_call":
                stack.append([time.perf_counter(), time.thread_time(), arg, True, frame])
            elif what in ("c_return", "c_exception") and stack:
                start, cpu, function, leaf, caller = stack.pop()
                took = (time.perf_counter() - start) * 1000
                if leaf and took > 15:
                    where = f"{caller.f_code.co_filename.split('site-packages/')[-1]}:{caller.f_lineno}"
                    cls.worker_calls.append((start - T0, took, f"{getattr(function, '__qualname__', function)} "
                                             f"from {where} ({(time.thread_time() - cpu) * 1000:.0f} ms CPU)"))

        run = Job._run

        def traced_run(job):
            sys.setprofile(hook)
            try:
                run(job)
            finally:
                sys.setprofile(None)

        Job._run = traced_run
        return TracingApplication([])

    @classmethod
    def report(cls, ends: list[float], gaps: list[float]) -> None:
        for end, gap in zip(ends, gaps):
            if gap - PERIOD_MS <= 50:
                continue
            start = end - gap / 1000
            overlaps = [f"GUI {what} {ms:.0f} ms" for s, ms, what in cls.gui_events if s < end and s + ms / 1000 > start]
            overlaps += [f"worker C call {what} {ms:.0f} ms" for s, ms, what in cls.worker_calls
                         if s < end and s + ms / 1000 > start]
            print(f"  stall {gap - PERIOD_MS:.0f} ms at {end:.2f} s: " + ("; ".join(overlaps) or "nothing slow ran "
                                                                         "(waiting for a CPU)"))
        slowest = sorted(cls.worker_calls, key=lambda call: -call[1])[:5]
        for _start, ms, what in slowest:
            print(f"  slowest worker C call: {what}, {ms:.0f} ms")
        cls.gui_events, cls.worker_calls = [], []


def _child_launch(stamp: float) -> int:
    """Runs in the child: build and show the window, print seconds since ``stamp`` at first paint."""
    import mlx_lora  # noqa: F401
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    from app import settings_store
    from app.main_window import MainWindow

    settings_store.apply_to_environment()
    app = QApplication([])
    window = MainWindow()

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() in (QEvent.Type.Paint, QEvent.Type.Expose, QEvent.Type.UpdateRequest):
                print(f"shown {time.time() - stamp:.3f}", flush=True)
                obj.removeEventFilter(self)
                QTimer.singleShot(0, app.quit)
            return False

    watcher = FirstPaint()
    window.installEventFilter(watcher)
    window.show()
    app.exec()
    return 0


def measure_launch(repeats: int = 3) -> list[float]:
    times = []
    for _ in range(repeats):
        stamp = time.time()
        out = subprocess.run([sys.executable, __file__, "--child-launch", repr(stamp)], capture_output=True,
                             text=True, timeout=120, env={**os.environ})
        line = next((l for l in out.stdout.splitlines() if l.startswith("shown ")), None)
        if line is None:
            raise RuntimeError(f"the child did not show its window:\n{out.stderr[-2000:]}")
        times.append(float(line.split()[1]))
    return times


class GapRecorder:
    """A 10 ms QTimer; ``gaps`` are the measured intervals (ms) while recording."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(PERIOD_MS)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.gaps: list[float] = []
        self.at: list[float] = []  # seconds since the window opened, per gap
        self.ends: list[float] = []  # seconds since T0, per gap (for --trace)
        self.busy: list[float] = []  # GUI-thread CPU ms spent within each gap
        self.last_cpu = 0.0
        self.opened = time.perf_counter()
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self.last is not None:
            self.busy.append((cpu - self.last_cpu) * 1000)
            self.gaps.append((now - self.last) * 1000)
            self.at.append(now - self.opened)
            self.ends.append(now - T0)
        self.last, self.last_cpu = now, cpu

    def window(self):
        self.gaps, self.at, self.ends, self.busy, self.last = [], [], [], [], None
        Trace.gui_events, Trace.worker_calls = [], []
        self.opened = time.perf_counter()
        return self

    def summary(self, name: str = "", trace: bool = False) -> dict:
        if trace:
            print(f"(trace) {name}:")
            Trace.report(self.ends, self.gaps)
        gaps = sorted(self.gaps) or [0.0]
        worst = max(range(len(self.gaps)), key=self.gaps.__getitem__) if self.gaps else 0
        over = sum(1 for gap in self.gaps if gap - PERIOD_MS > 50)
        return {"ticks": len(self.gaps), "longest_stall_ms": max(gaps) - PERIOD_MS,
                "longest_busy_ms": max(self.busy or [0.0]),
                "longest_at_s": self.at[worst] if self.gaps else 0.0, "stalls_over_50ms": over,
                "p99_gap_ms": gaps[int(0.99 * (len(gaps) - 1))], "median_gap_ms": statistics.median(gaps)}


def wait_until(app, predicate, timeout_s: float) -> None:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("timed out")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def measure_stalls(iters: int, tokens: int, trace: bool = False) -> dict[str, dict]:
    from PySide6.QtWidgets import QApplication

    import mlx_lora  # noqa: F401
    from app.main_window import MainWindow
    from mlx_lora import paths

    app = QApplication.instance() or (Trace.install() if trace else QApplication([]))
    window = MainWindow()
    window.resize(1280, 820)
    window.show()
    ctx = window.context
    ctx.state.select_model("demo", "SmolLM2-135M-Instruct (demo)")
    ctx.state.select_dataset(str(paths.sample_datasets_dir() / "pirate"))
    window.show_page(2)
    recorder = GapRecorder()
    results = {}

    recorder.window()
    end = time.monotonic() + 3
    wait_until(app, lambda: time.monotonic() > end, 10)
    results["idle (baseline)"] = recorder.summary("idle (baseline)", trace)

    page = window.train_page
    run_dir = paths.runs_dir() / f"bench-{int(time.time())}"
    page.set_config(page.config().replace(
        iters=iters, batch_size=2, max_seq_length=256, num_layers=4, learning_rate=1e-3, steps_per_report=1,
        steps_per_eval=max(1, iters // 2), val_batches=2, save_every=iters, run_dir=str(run_dir)))
    ended = []
    ctx.training.run_ended.connect(lambda outcome, message: ended.append(outcome))
    recorder.window()
    page.start_button.click()
    wait_until(app, lambda: ended, 900)
    name = f"training ({iters} steps, real trainer child)"
    results[name] = recorder.summary(name, trace)
    if ended[0] != "finished":
        raise RuntimeError(f"training {ended[0]}: {page.log_view.toPlainText()[-2000:]}")

    chat = window.chat_page
    window.show_page(3)
    chat.select_run(str(run_dir))
    wait_until(app, lambda: chat.picker.pending is None, 30)
    loaded = []
    ctx.chat.model_loaded.connect(loaded.append)
    recorder.window()
    started = time.perf_counter()
    chat.load_button.click()
    wait_until(app, lambda: loaded, 300)
    summary = recorder.summary("chat model loading", trace)
    summary["seconds"] = time.perf_counter() - started
    results["chat model loading"] = summary

    chat.max_tokens.setValue(tokens)
    chat.temperature.setValue(0.7)
    chat.seed.setValue(0)
    answered, counted = [], []
    ctx.chat.delta_received.connect(lambda side, delta: counted.append(1))
    ctx.chat.answer_finished.connect(answered.append)
    chat.input.setPlainText("Where be the treasure buried, and who guards it? Tell me the whole tale.")
    recorder.window()
    started = time.perf_counter()
    chat.send_button.click()
    wait_until(app, lambda: answered, 600)
    elapsed = time.perf_counter() - started
    summary = recorder.summary("chat streaming", trace)
    summary["tokens"] = len(counted)
    summary["tokens_per_s"] = len(counted) / elapsed
    results[f"chat streaming (base + tuned, ≤{tokens} tokens each)"] = summary
    window.close()
    return results


def measure_charts(points: int = 60) -> dict:
    import math

    from PySide6.QtCore import QEvent, QEventLoop, QObject
    from PySide6.QtWidgets import QApplication

    from app.controllers.training import smoothed
    from app.widgets.charts import TrainingCharts

    app = QApplication.instance() or QApplication([])
    charts = TrainingCharts()
    charts.resize(1100, 380)
    charts.show()
    wait_until(app, lambda: charts.isVisible(), 5)
    end = time.monotonic() + 1
    wait_until(app, lambda: time.monotonic() > end, 5)

    class PaintCounter(QObject):
        paints = 0

        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint:
                PaintCounter.paints += 1
            return False

    counter = PaintCounter()
    for plot in (charts.loss_plot, charts.lr_plot):
        plot.viewport().installEventFilter(counter)
    draw = getattr(charts, "_draw", None)  # this branch's one redraw; main's set_history redraws every time
    steps, losses, rates, val_steps, val_losses = [], [], [], [], []
    cpu, paints = [], []
    for k in range(1, points + 1):
        steps.append(k)
        losses.append(3 * math.exp(-k / 30) + 0.1 * math.sin(k))
        rates.append(1e-3 * min(1.0, k / 10))
        if k % 10 == 0:
            val_steps.append(k)
            val_losses.append(losses[-1] + 0.2)
        history = (steps, losses, smoothed(losses), val_steps, val_losses, rates)
        PaintCounter.paints = 0
        start = time.thread_time()
        draw(history) if draw else charts.set_history(*history)
        for _ in range(5):
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents)
        cpu.append((time.thread_time() - start) * 1000)
        paints.append(PaintCounter.paints)
    charts.close()
    return {"cpu_median_ms": statistics.median(cpu), "cpu_p90_ms": sorted(cpu)[int(0.9 * (len(cpu) - 1))],
            "paints_median": statistics.median(paints)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--trace", action="store_true", help="name what overlapped each stall over 50 ms")
    parser.add_argument("--charts", action="store_true", help="only the cost of one redraw of the training charts")
    parser.add_argument("--skip-launch", action="store_true", help="leave out the launch → window shown timing")
    parser.add_argument("--child-launch", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.child_launch is not None:
        return _child_launch(args.child_launch)
    if "MLX_LORA_HOME" not in os.environ:
        os.environ["MLX_LORA_HOME"] = tempfile.mkdtemp(prefix="mlx-lora-bench-")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(load average at start: {load:.1f} on {os.cpu_count()} cores)\n")
    if args.charts:
        result = measure_charts()
        print(f"training charts, one report drawn: GUI-thread CPU median {result['cpu_median_ms']:.1f} ms "
              f"(p90 {result['cpu_p90_ms']:.1f}), {result['paints_median']:.0f} repaints")
        return 0
    print(f"chat model in {'a thread of the app' if os.environ.get('MLX_LORA_CHAT_IN_PROCESS') == '1' else 'a child process'}\n")
    if not args.skip_launch:
        launch = measure_launch()
        print("## Launch → window shown (goal < 2 s)\n")
        print(f"median {statistics.median(launch):.2f} s (runs: {', '.join(f'{t:.2f}' for t in launch)})\n")

    stalls = measure_stalls(args.iters, args.tokens, args.trace)
    print("## Longest GUI-thread stall, 10 ms timer (goal < 50 ms)\n")
    print("| while | ticks | longest stall ms (at s) | stalls > 50 ms | p99 gap ms | median gap ms | "
          "longest GUI-thread CPU per gap ms | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, s in stalls.items():
        notes = f"{s['tokens']} tokens, {s['tokens_per_s']:.1f} tok/s" if "tokens" in s else ""
        notes = f"loaded in {s['seconds']:.1f} s" if "seconds" in s else notes
        print(f"| {name} | {s['ticks']} | {s['longest_stall_ms']:.1f} ({s['longest_at_s']:.1f}) | "
              f"{s['stalls_over_50ms']} | {s['p99_gap_ms']:.1f} | "
              f"{s['median_gap_ms']:.1f} | {s['longest_busy_ms']:.1f} | {notes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
