"""apc plot: the kind's figures as non-empty PNG files; layouts name columns the record has."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from apc.cli import main
from apc.kinds import get_kind
from apc.record_table import read_table

PNG = b"\x89PNG\r\n\x1a\n"


def plotted(record: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> list[Path]:
    assert main(["plot", str(record), "--out", str(out)]) == 0
    return [Path(line) for line in capsys.readouterr().out.splitlines()]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG from its IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_cell_record_gives_cv_and_mv_figures(cell_record_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A cell record plots to cvs.png and mvs.png, each a readable-size PNG."""
    files = plotted(cell_record_path, tmp_path / "trends", capsys)
    assert sorted(f.name for f in files) == ["cvs.png", "mvs.png"]
    for f in files:
        width, height = png_size(f)
        assert width >= 1000 and height >= 600 and f.stat().st_size > 20_000


def test_furnace_record_gives_the_batch_figure(furnace_record_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A furnace record plots to batch.png (temperature, power, pressure), a readable-size PNG."""
    files = plotted(furnace_record_path, tmp_path / "trends", capsys)
    assert [f.name for f in files] == ["batch.png"]
    width, height = png_size(files[0])
    assert width >= 1000 and height >= 700 and files[0].stat().st_size > 20_000


@pytest.mark.parametrize("fixture", ["cell_record_path", "furnace_record_path"])
def test_layout_columns_exist_in_the_record(fixture: str, request: pytest.FixtureRequest) -> None:
    """Every column a kind's layout draws (but plan moves, absent while the unit is not ON) is in its record."""
    table = read_table(request.getfixturevalue(fixture))
    names = frozenset(table.names())
    layout = get_kind(str(table.header["unit_kind"])).trend_layout(table.header, names)
    wanted = {c for fig in layout.figures for p in fig.panels for s in p.series
              for c in (s.column, s.sigma_column, s.time_column) if c and not c.startswith("plan.")}
    assert wanted and wanted <= names, sorted(wanted - names)
    levels = [lv for fig in layout.figures for p in fig.panels for lv in p.levels]
    assert levels  # MV limits (and the furnace's pressure limit) are drawn


def test_default_folder_beside_the_record(furnace_record_path: Path, tmp_path: Path) -> None:
    """Without --out the figures go to <record name>_trends beside the record."""
    rec = tmp_path / "f1.apcrec"
    rec.write_bytes(furnace_record_path.read_bytes())
    assert main(["plot", str(rec)]) == 0
    assert (tmp_path / "f1_trends" / "batch.png").stat().st_size > 0


def test_plot_without_matplotlib_fails_in_one_line(cell_record_path: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without matplotlib, apc plot exits 1 with one line naming the extra to install, writing nothing."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(cell_record_path), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apc-runtime[plot]" in err
    assert not (tmp_path / "t").exists()
