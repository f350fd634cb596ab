"""Chat page screenshots, mid-stream and after, light and dark (offscreen, real engine in its child).

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/chat_screenshots.py OUT_DIR

A hand-made LoRA run on the demo model (tests/core/test_chat_helpers.make_run), so it needs no training;
writes 4-chat-{light,dark}.png (after) and chat-streaming-{light,dark}.png (while both stream)."""
import os, sys, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent; sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
home = Path(tempfile.mkdtemp(prefix="mlx-lora-chatshot-")); os.environ["MLX_LORA_HOME"] = str(home / "home")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
run_dir = home / "home" / "runs" / "20261129-103000-demo-pirate"
# a hand-made LoRA run on the demo model (the machine is too loaded to train one in time)
from tests.core.test_chat_helpers import make_run
from mlx_lora.models.demo import demo_model_path
make_run(demo_model_path(), run_dir, num_layers=16, rank=8, scale=2.0, b_std=0.02,
         keys=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"])
import mlx_lora  # noqa
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from app.main_window import MainWindow
app = QApplication([])
window = MainWindow(); window.resize(1280, 820); window.show()
ctx = window.context; chat = window.chat_page
window.show_page(3)
chat.select_run(str(run_dir)); ctx.chat.refresh_runs()
def wait(p, s):
    for _ in range(int(s * 10)):
        if p(): return
        QTest.qWait(100)
    raise TimeoutError
wait(lambda: chat.picker.pending is None, 60)
loaded = []; ctx.chat.model_loaded.connect(loaded.append)
chat.load_button.click(); wait(lambda: loaded, 600)
chat.temperature.setValue(0.0); chat.repetition_penalty.setValue(1.2); chat.max_tokens.setValue(40)
counted = []; ctx.chat.delta_received.connect(lambda s, d: counted.append(s))
answered = []; ctx.chat.answer_finished.connect(answered.append)
chat.input.setPlainText("Where be the treasure buried, and who guards it?")
chat.send_button.click()
wait(lambda: len(counted) >= 24, 600)
for scheme in ("light", "dark"):
    window.set_appearance(scheme); QTest.qWait(200)
    window.grab().save(str(out / f"chat-streaming-{scheme}.png"))
wait(lambda: answered, 600)
for scheme in ("light", "dark"):
    window.set_appearance(scheme); QTest.qWait(200)
    window.grab().save(str(out / f"4-chat-{scheme}.png"))
window.set_appearance("system"); window.close()
print("done", out)
