"""``mlx-lora export``: a run's adapter out as a fused model or an adapter, checked
against base+adapter before it is written, optionally pushed to the Hub.

    mlx-lora export --run runs/my-run --out exports/my-model                  # fused MLX folder
    mlx-lora export --run runs/my-run/best --out exports/gguf --format gguf --quantize q4_k_m
    mlx-lora export --run runs/my-run --out exports/peft --format peft --push me/my-adapter
    mlx-lora export --run runs/my-run --out exports/pirate --format gguf --quantize q4_k_m --to lmstudio

Progress and the check's numbers go to stderr, the export folder's path to stdout;
``--json-events`` prints one JSON object per event on stdout instead (for the app).
Exit status 0 when the export passed its check, 2 when it failed (nothing written).
"""

from __future__ import annotations

import sys

from mlx_lora.errors import UserError
from mlx_lora.events import Event


def register(sub) -> None:
    from mlx_lora.export.formats import DEFAULT_FORMAT, FORMATS

    p = sub.add_parser("export", help="export a run's adapter (fused model, GGUF, PEFT…), verified",
                       description="Export a run's adapter, checked against base+adapter before it is written.")
    p.add_argument("--run", required=True, metavar="RUN_OR_CHECKPOINT",
                   help="a run folder, its best/ folder, or checkpoints/step-N/")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the folder to write: a new or empty folder, or an earlier export (replaced)")
    p.add_argument("--format", choices=list(FORMATS), default=DEFAULT_FORMAT,
                   help="; ".join(f"{name}: {fmt.description}" + (" (default)" if name == DEFAULT_FORMAT else "")
                                  for name, fmt in FORMATS.items()))
    values = {str(q): q for fmt in FORMATS.values() for q in fmt.quantize if q}  # "8" → 8, "q4_k_m" → "q4_k_m"
    # and a GGUF type's name for its bits ("q8_0" → 8), from the labels
    aliases = {fmt.quantize_label(q).split()[0]: q for fmt in FORMATS.values() for q in fmt.quantize
               if isinstance(q, int)}
    p.add_argument("--quantize", type=lambda text: values.get(text.lower(), aliases.get(text.lower(), text)),
                   choices=list(values.values()),
                   metavar="{" + ",".join(values) + "}",
                   help="quantise after fusing: " + "; ".join(
                       f"{name} {' or '.join(fmt.quantize_label(b) for b in fmt.quantize if b)}"
                       for name, fmt in FORMATS.items() if any(fmt.quantize)))
    p.add_argument("--to", choices=["lmstudio", "ollama"],
                   help="hand the export on: lmstudio copies a GGUF file (--format gguf) or an MLX folder "
                        "(--format mlx) into LM Studio's models folder (<models>/mlx-lora-studio/<name>/); "
                        "ollama (--format gguf) runs `ollama create <name> -f Modelfile` "
                        "(or prints that command when ollama is not on PATH)")
    p.add_argument("--imatrix", action="store_true",
                   help="quantise the K-quants (--format gguf --quantize q6_k|q5_k_m|q4_k_m) with an importance matrix "
                        "computed from the run's own training data")
    p.add_argument("--name", help="the model's name in LM Studio or Ollama (default: the --out folder's name)")
    p.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hugging Face Hub repo")
    p.add_argument("--public", action="store_true", help="make a new Hub repo public (default: private)")
    p.add_argument("--json-events", action="store_true", help="print one JSON object per event on stdout")
    p.set_defaults(func=_export)


class _Printer:
    def __init__(self, json_events: bool) -> None:
        self.json_events = json_events

    def emit(self, event: Event) -> None:
        from mlx_lora.events import Progress
        from mlx_lora.export import ExportVerified, StaleTemporariesRemoved
        from mlx_lora.export.verify import TOO_SMALL

        if self.json_events:
            print(event.to_json(), flush=True)
            return
        if isinstance(event, StaleTemporariesRemoved):
            print(event.message, file=sys.stderr, flush=True)
        elif isinstance(event, Progress) and event.message != "done":
            print(f"{event.message}…", file=sys.stderr, flush=True)
        elif isinstance(event, ExportVerified):
            if event.status == "not run":
                print(f"  {event.check}: not run ({'; '.join(event.problems)})", file=sys.stderr)
            else:
                # the error beside the adapter's effect, each in the same statistic (verify.py)
                verdict = event.status if event.status == TOO_SMALL else "passed" if event.passed else "FAILED"
                print(f"  {event.check}: {verdict} — top-1 agreement {event.top1_agreement:.2%}, max |Δlogit| "
                      f"{event.max_abs_logit_diff:.3g} (the adapter's: {event.adapter_max_effect:.3g}), mean "
                      f"{event.mean_abs_logit_diff:.3g} (the adapter's: {event.adapter_effect:.3g})"
                      + (f"; mean KL {event.mean_kl:.3g} (KL tuned‖base {event.adapter_kl:.3g}), the adapter's "
                         f"effect kept {event.adapter_effect_kept:.1%}" if event.adapter_effect_kept is not None else "")
                      + (f"; validation loss {event.val_loss:.4f} (base+adapter {event.val_loss_tuned:.4f}, base "
                         f"{event.val_loss_base:.4f})" if event.val_loss is not None else ""),
                      file=sys.stderr, flush=True)


def _export(args) -> int:
    from mlx_lora.export.destination import check_destination

    try:
        check_destination(args.out, args.run)  # refused before MLX and the model load (the engine checks again)
    except UserError as exc:
        if args.json_events:  # the engine's own errors are its ExportFailed event
            from mlx_lora.export.exporter import ExportFailed

            print(ExportFailed(args.out, str(exc)).to_json(), flush=True)
        raise
    if args.to == "ollama" and args.format != "gguf":
        raise UserError(f"--to {args.to} hands on a GGUF file: add --format gguf")
    if args.to == "lmstudio" and args.format not in ("gguf", "mlx"):
        raise UserError(f"--to {args.to} hands on a GGUF file or an MLX folder: add --format gguf (or mlx)")
    from mlx_lora.export import export_run

    result = export_run(args.run, args.out, args.format, args.quantize, args.push, reporter=_Printer(args.json_events),
                        private=not args.public, imatrix=args.imatrix)
    if not args.json_events:
        print(result.out_dir)
        for note in result.notes:
            print(f"  note: {note}", file=sys.stderr)
        if result.pushed_url:
            print(f"pushed: {result.pushed_url}", file=sys.stderr)
    if args.to:
        _hand_off(args, result.out_dir)
    return 0


def _hand_off(args, out_dir) -> None:
    from mlx_lora.export import handoff

    name = args.name or out_dir.name
    if args.to == "lmstudio":
        where = handoff.send_to_lmstudio(out_dir, "mlx-lora-studio", name)
        print(f"LM Studio: {where}", file=sys.stderr)
        return
    command, ran = handoff.ollama_create(out_dir, name.lower())
    print(f"Ollama: {'created ' + name.lower() if ran else 'ollama is not on PATH; run: ' + command}",
          file=sys.stderr)
