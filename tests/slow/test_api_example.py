"""The README's Python API example runs as written on the embedded model, and gives the same cells (hashes)
and tables as `mechsteer run` on the same study.

The CLI runs on a copy of the example's cells without its report: a cell the CLI hashed differently would be
computed anew and show as an extra cell folder, so equal cell sets mean equal hashes, and the CLI then writes
its own report from them. (That a cell recomputes to the same numbers is the store's contract, tested in
tests/integration; here it would only repeat the example's ~50 s of generation.)"""

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
    shutil.copytree(Path(results.output_dir) / "cells", f"cli/quickstart/limit-{limit}/cells")
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


def test_api_and_cli_compute_the_same_cells_and_tables(tmp_path):
    """Computed independently (a tiny model, so both can afford it): the API's and the CLI's runs of one study
    have the same cell hashes and bit-identical tables and samples."""
    import yaml
    from conftest import make_tiny_model
    from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

    import mechsteer as ms
    from mechsteer.cli.app import app

    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    model.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    prompts = ["ab", "hello there", "x"]
    doc = {
        "name": "tiny",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 8.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {
            "gen": {"kind": "generate", "prompts": prompts, "template": "raw", "max_new_tokens": 6, "temperature": 1.0},
            "first": {"kind": "first_token", "prompts": prompts, "template": "raw", "track": ["a"]},
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    api = ms.load_study(tmp_path / "s.yaml").run(output_dir=tmp_path / "api")
    r = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "cli"), "-q"])
    assert r.exit_code == 0, r.output
    cells = {
        name: sorted(p.name for p in (tmp_path / name / "tiny" / "cells").iterdir() if p.name[0] != ".")
        for name in ("api", "cli")
    }
    assert cells["api"] == cells["cli"] and len(cells["api"]) == len({c["hash"] for c in api.cells}) == 4
    for h in cells["api"]:
        for f in ("samples.jsonl", "metrics.json"):
            a, b = (tmp_path / name / "tiny" / "cells" / h / f for name in ("api", "cli"))
            assert a.read_bytes() == b.read_bytes(), (h, f)
    assert (tmp_path / "api/tiny/report/table.csv").read_bytes() == (
        tmp_path / "cli/tiny/report/table.csv"
    ).read_bytes()
