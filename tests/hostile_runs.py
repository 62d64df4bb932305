"""An output folder written to attack its own report: a downloaded run whose plan.json, cell records and files
hold hostile names, descriptions and tokens, for the report tests (`mechsteer report DIR` reads such a folder
without its study file).

Every payload that would run a script sets `window.__pwned` (so a browser test can see whether it ran), and
every file the page must not inline holds a marker that a test can search for in the page."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

from recorded_runs import eval_cell, write_run

PWN = "window.__pwned=1"
SECRET = b"SECRET-OUTSIDE-THE-OUTPUT-FOLDER"
"""Content of the files outside the output folder the page must never carry (raw or base64)."""

DESCRIPTION = "\n".join(
    [
        "A hostile study: ![etc](/etc/passwd) ![outside](../../outside.png) ![link](leak.png) ![own](own.png)",
        "[click](javascript:alert(1)) [data](data:text/html;base64,PHNjcmlwdD4=) [file](file:///etc/passwd)",
        "[tab](java\tscript:alert(1)) [abs](/etc/passwd) [slashes](//evil.example/x) [ok](https://example.org/a)",
        f'<script>{PWN}</script> <img src=x onerror="{PWN}"> <a href="javascript:{PWN}">x</a>',
        "[embedded](../cells/leak.html)",
        "",
        "| a | b |",
        "|---|---|",
        "| ragged |",
    ]
)
CONDITIONS = [
    "base",
    f"<script>{PWN}</script>",
    "c|d",
    "![x](/etc/passwd)",
    "[a](javascript:alert(1))",
    f'<img src=x onerror="{PWN}">',
]
TOKEN = "a|b"
"""A tracked token with a table separator in it (it becomes a metric name, i.e. a column)."""


def png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG (grey)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def outside_markers() -> list[str]:
    """Strings whose presence in the page means an outside file was inlined."""
    out = [SECRET.decode(), base64.b64encode(SECRET).decode()[:24]]
    passwd = Path("/etc/passwd")
    if passwd.is_file():
        out.append(base64.b64encode(passwd.read_bytes()).decode()[:40])
    return out


def hostile_run(root: Path) -> Path:
    """The output folder `root/run` (plus a secret folder beside it that symlinks point into)."""
    outside = root / "outside"
    outside.mkdir(parents=True)
    secret_png = png(5, 5)[:-12] + SECRET + png(5, 5)[-12:]  # a PNG-looking file that carries the secret
    (outside / "secret.png").write_bytes(secret_png)
    (outside / "secret.html").write_text(f"<p>{SECRET.decode()}</p><script>{PWN}</script>")
    (root / "outside.png").write_bytes(secret_png)
    run = root / "run"
    sample = (
        f"<!DOCTYPE html><html><body><span class='tok'>ok</span><script>{PWN};parent.__pwned=1</script></body></html>"
    )
    cells = []
    for i, cond in enumerate(CONDITIONS):
        model = f"m<b>{i % 2}"
        c = eval_cell(model, cond, [1, 0, 1, 0])
        if i == 1:
            c["files"] = {"tokens/sample.html": sample.encode()}
        first = {"model": model, "condition": cond, "measurement": "readout:first", "kind": "first_token", "seed": 0}
        cells += [c, {**first, "metrics": {f"p({TOKEN})": 0.25, "p(<script>)": 0.5, "n": 4.0}}]
    write_run(run, study="hostile", cells=cells, baseline="base")
    plan = json.loads((run / "plan.json").read_text())
    plan["description"] = DESCRIPTION
    (run / "plan.json").write_text(json.dumps(plan))
    (run / "report").mkdir()
    (run / "report" / "own.png").write_bytes(png())  # the folder's own figure: shown in place
    (run / "report" / "extra.png").write_bytes(png(4, 4))  # and one more: listed under Figures
    (run / "report" / "leak.png").symlink_to(outside / "secret.png")  # an image link and a Figures candidate
    (run / "cells" / "leak.html").symlink_to(outside / "secret.html")
    first = sorted((run / "cells").glob("*/cell.json"))[0].parent
    (first / "leak.html").symlink_to(outside / "secret.html")  # a Samples candidate
    (first / "fine.png").write_bytes(png())  # not under report/: never a figure
    return run
