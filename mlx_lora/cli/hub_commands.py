"""``mlx-lora models search|info|download|list|rm``: the Hugging Face Hub side.

    mlx-lora models search qwen --sort trending --limit 10
    mlx-lora models download mlx-community/SmolLM2-135M-Instruct-4bit

Results go to stdout, download progress to stderr (one line per file, or a
live line on a terminal); problems raise UserError, which main turns into exit 2.
"""

from __future__ import annotations

import sys

SORT_CHOICES = ("downloads", "likes", "trending", "recent")


def register(msub) -> None:
    """Adds the Hub actions to ``mlx-lora models``."""
    s = msub.add_parser("search", help="search the Hub for text-generation models")
    s.add_argument("query", help="text the model id must contain")
    s.add_argument("--sort", choices=SORT_CHOICES, default="downloads", help="order of the results (default: downloads)")
    s.add_argument("--limit", type=int, default=30, help="how many results (default: 30)")
    s.set_defaults(func=_search)

    i = msub.add_parser("info", help="show a Hub model's files, license and what a download would fetch")
    i.add_argument("repo", help="the Hub repository, org/name")
    i.add_argument("--revision", help="branch, tag or commit (default: main)")
    i.set_defaults(func=_info)

    d = msub.add_parser("download", help="download a Hub model into the Hugging Face cache and print its folder")
    d.add_argument("repo", help="the Hub repository, org/name")
    d.add_argument("--revision", help="branch, tag or commit (default: main)")
    d.set_defaults(func=_download)

    ls = msub.add_parser("list", help="list the models in the Hugging Face cache")
    ls.set_defaults(func=_list)

    rm = msub.add_parser("rm", help="delete a model from the Hugging Face cache")
    rm.add_argument("repo", help="the Hub repository, org/name")
    rm.set_defaults(func=_rm)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _search(args) -> int:
    from mlx_lora.models.hub import search_models

    results = search_models(args.query, sort=args.sort, limit=args.limit)
    if not results:
        print(f"no text-generation models match {args.query!r}", file=sys.stderr)
        return 0
    rows = [["MODEL", "PARAMS", "SIZE", "DOWNLOADS", "LIKES", "LICENSE", "NOTES"]]
    for m in results:
        notes = ", ".join(n for n, on in (("mlx", m.is_mlx), ("gated", m.gated)) if on)
        rows.append([m.repo_id, _count(m.params), _size(m.size_bytes), _count(m.downloads), _count(m.likes),
                     m.license or "-", notes])
    _table(rows)
    return 0


def _info(args) -> int:
    from mlx_lora.models.hub import mlx_conversion_hint, model_details

    d = model_details(args.repo, revision=args.revision)
    print(f"model:     {d.repo_id} @ {d.commit or '?'}")
    print(f"license:   {d.license or '-'}{'  (gated: accept its terms on the Hub)' if d.gated else ''}")
    print(f"params:    {_count(d.params)}   weights: {_size(d.size_bytes)}")
    if d.card_summary:
        print(f"card:      {d.card_summary}")
    for problem in d.problems:
        print(f"cannot download: {problem}")
    if d.download_files:
        print(f"download:  {len(d.download_files)} files, {_size(d.download_bytes)}")
        for f in d.download_files:
            print(f"  {f.name}  {_size(f.size)}")
    if not d.is_mlx and (hint := mlx_conversion_hint(d.repo_id)):
        print(f"note: {hint}")
    return 0


class _StderrProgress:
    """Download progress on stderr: a line per finished file; on a terminal also
    a live line with the overall percentage."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._shown = None

    def emit(self, event) -> None:
        from mlx_lora.models.hub import DownloadProgress

        if not isinstance(event, DownloadProgress):
            return
        total = event.repo_bytes_total or 1
        if event.bytes_total and event.bytes_done >= event.bytes_total:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(f"{event.filename}  {_size(event.bytes_total)}  "
                              f"({100 * event.repo_bytes_done // total}% of {_size(event.repo_bytes_total)})\n")
            self.stream.flush()
        elif self.live:
            shown = (event.filename, 1000 * event.repo_bytes_done // total)
            if shown != self._shown:
                self._shown = shown
                self.stream.write(f"\r\033[K{event.filename}  {shown[1] / 10:.1f}%")
                self.stream.flush()


def _download(args) -> int:
    from mlx_lora.models.hub import download_model

    path = download_model(args.repo, revision=args.revision, reporter=_StderrProgress())
    print(path)
    return 0


def _list(args) -> int:
    from mlx_lora.models.hub import hub_cache_dir, list_cached

    models = list_cached()
    if not models:
        print(f"no models in the Hugging Face cache ({hub_cache_dir()})", file=sys.stderr)
        return 0
    rows = [["MODEL", "SIZE", "LAST USED", "PATH"]]
    for m in models:
        path = str(m.path) if m.complete else "(incomplete: download it again)"
        rows.append([m.repo_id, _size(m.size_bytes), m.last_accessed.astimezone().strftime("%Y-%m-%d %H:%M"), path])
    _table(rows)
    return 0


def _rm(args) -> int:
    from mlx_lora.models.hub import delete_cached

    freed = delete_cached(args.repo)
    print(f"removed {args.repo} ({_size(freed)} freed)")
    return 0
