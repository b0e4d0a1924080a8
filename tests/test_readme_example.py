"""The README's "Audit your own model" example runs exactly as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Audit your own model\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "no python block in the README's audit section"
    return blocks[0]


def test_the_example_is_short() -> None:
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 15


@pytest.mark.usefixtures("one_torch_thread")
def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "| epsilon | ID accuracy |" in printed and "8/255" in printed
    report = namespace["report"]
    assert report.config["n_id"] == 64 and report.ood_names == ["noise"]
    for name in ("report.html", "report.md", "results.json"):
        assert (tmp_path / "audit-out" / name).is_file()
