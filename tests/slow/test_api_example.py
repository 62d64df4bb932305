"""The README's Python API example runs as written on the embedded model, and gives the same cells (hashes)
and tables as `mechsteer run` on the same study."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- api-example --> python block"
    return m.group(1)


def test_readme_api_example_matches_the_cli(tmp_path, monkeypatch):
    from mechsteer.cli.app import app

    (tmp_path / "studies").mkdir()
    shutil.copy(REPO / "studies" / "quickstart.yaml", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md api-example", "exec"), scope)  # noqa: S102 - our own README
    results = scope["results"]
    # bound absolute at compile; a limited run has its own folder
    assert Path(results.output_dir) == (tmp_path / "outputs" / "quickstart" / "limit-8").resolve()
    assert scope["ms"].diff(results, scope["again"])["delta"].abs().max() == 0

    limit = int(re.search(r"limit=(\d+)", readme_example()).group(1))
    r = CliRunner().invoke(app, ["run", "studies/quickstart.yaml", "--limit", str(limit), "-o", "cli", "-q"])
    assert r.exit_code == 0, r.output
    api_dir, cli_dir = results.output_dir, Path(f"cli/quickstart/limit-{limit}")
    api_cells = sorted(p.name for p in (api_dir / "cells").iterdir() if not p.name.startswith("."))
    cli_cells = sorted(p.name for p in (cli_dir / "cells").iterdir() if not p.name.startswith("."))
    assert api_cells == cli_cells and len(api_cells) == len({c["hash"] for c in results.cells})
    api_table = pd.read_csv(api_dir / "report" / "table.csv")
    cli_table = pd.read_csv(cli_dir / "report" / "table.csv")
    pd.testing.assert_frame_equal(api_table, cli_table)
    assert not results.wide().empty and not results.delta().empty
    eff = results.effects()  # the quickstart's control: steered is compared with random_control too
    steered = eff[(eff.measurement == "mini") & (eff.condition == "steered")].iloc[0]
    assert steered.control == "random_control" and steered.n == limit and steered.interval == "wilson"
    assert len([ax for ax in results.plot().axes if ax.get_visible()]) == eff.measurement.nunique()
