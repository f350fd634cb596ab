"""``mlx-lora doctor``: device, backend, BLAS, memory and versions."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("doctor", help="show the device, backend, BLAS, memory and versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul speed probe")
    p.set_defaults(func=run)


def run(args) -> int:
    from mlx_lora.backend import doctor_report

    report = doctor_report(measure=not args.no_measure)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0
