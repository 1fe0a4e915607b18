"""apc export: one row per cycle, named columns, values as recorded, no NaN/Infinity token."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from apc.cli import main
from apc.recorder import read_record

TOKENS = re.compile(r"(?<![A-Za-z_])(NaN|nan|-?Infinity|-?inf)(?![A-Za-z_])")


def export(record: Path, fmt: str, out: Path) -> Path:
    assert main(["export", str(record), "--format", fmt, "--out", str(out)]) == 0
    return out


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_cell_csv_has_a_row_per_cycle_and_the_recorded_values(cell_record_path: Path, tmp_path: Path) -> None:
    """CSV of a cell record: one row per cycle, unit-named columns, every value equal to the record's."""
    rec = read_record(cell_record_path)
    rows = csv_rows(export(cell_record_path, "csv", tmp_path / "cell.csv"))
    assert len(rows) == len(rec.cycles) == 360
    for name in ("t_s", "utc", "mode_actual", "input.cell_voltage_V", "input.cell_voltage_V.verdict",
                 "input.oxide_lab_wtpct.sample_utc", "estimate.bath_temp_degC", "estimate.bath_temp_degC_sigma",
                 "readback.oxide_feed_kg_h", "readback.anode_move_cm", "guard.clamps", "shed", "shed_reason",
                 "truth.bath_temp_degC"):
        assert name in rows[0], name
    for row, cyc in zip(rows, rec.cycles):
        assert float(row["t_s"]) == cyc["t_s"]
        assert row["mode_actual"] == cyc["mode"]["actual"]
        assert float(row["input.cell_voltage_V"]) == cyc["inputs"]["cell_voltage"][0]
        assert row["input.cell_voltage_V.verdict"] == cyc["inputs"]["cell_voltage"][5]
        i = cyc["estimate"]["names"].index("bath_temp_degC")
        assert float(row["estimate.bath_temp_degC"]) == cyc["estimate"]["x"][i]
        assert float(row["estimate.bath_temp_degC_sigma"]) == math.sqrt(cyc["estimate"]["P_diag"][i])
        assert float(row["readback.current_sp_kA"]) == cyc["readback"]["current_sp"]
        assert row["shed"] == str(cyc["shed"])
        assert float(row["truth.dissolved_oxide_wtpct"]) == cyc["truth"]["dissolved_oxide_wtpct"]
    frame = pd.read_csv(tmp_path / "cell.csv")
    assert frame.shape[0] == 360 and frame["shed"].dtype == bool
    assert frame["estimate.pseudo_resistance_uohm"].isna().any()  # NaN in the record: empty field, NaN in pandas


def test_cell_parquet_matches_the_record_with_units_and_header(cell_record_path: Path, tmp_path: Path) -> None:
    """Parquet of a cell record: same rows and values; NaN in the record is null; units and header in metadata."""
    rec = read_record(cell_record_path)
    out = export(cell_record_path, "parquet", tmp_path / "cell.parquet")
    table = pq.read_table(out)
    assert table.num_rows == len(rec.cycles)
    assert table.schema.field("input.cell_voltage_V").metadata == {b"unit": b"V"}
    assert json.loads(table.schema.metadata[b"apc_header"])["unit_kind"] == "electrolysis_cell"
    resist = table.column("estimate.pseudo_resistance_uohm")
    recorded_nan = sum(1 for c in rec.cycles if math.isnan(c["estimate"]["extras"]["pseudo_resistance_uohm"]))
    assert resist.null_count == recorded_nan > 0
    frame = pd.read_parquet(out)
    assert frame["t_s"].tolist() == [c["t_s"] for c in rec.cycles]
    assert frame["readback.oxide_feed_kg_h"].tolist() == [c["readback"]["oxide_feed"] for c in rec.cycles]


def with_non_finite_inputs(src: Path, dst: Path) -> list[int]:
    """Copy ``src`` with NaN, +inf and -inf cell voltages in three cycles (whole cycle lines); their indices."""
    rec = read_record(src)
    hits = [10, 20, 30]
    with open(dst, "w", encoding="utf-8") as f:
        f.write(json.dumps(rec.headers[0]) + "\n")
        for i, original in enumerate(rec.cycles):
            cyc = json.loads(json.dumps(original))
            if i in hits:
                cyc["inputs"]["cell_voltage"][0] = (math.nan, math.inf, -math.inf)[hits.index(i)]
                cyc["inputs"]["cell_voltage"][5] = "not_finite"
            f.write(json.dumps(cyc) + "\n")
    return hits


def test_non_finite_inputs_leave_no_token_in_csv_and_are_null_in_parquet(cell_record_path: Path,
                                                                         tmp_path: Path) -> None:
    """NaN/Infinity inputs: empty CSV fields (NaN in pandas), no token in the text; null in Parquet."""
    src = tmp_path / "nan.apcrec"
    hits = with_non_finite_inputs(cell_record_path, src)
    assert "NaN" in src.read_text() and "Infinity" in src.read_text()
    text = export(src, "csv", tmp_path / "nan.csv").read_text()
    assert TOKENS.search(text) is None
    frame = pd.read_csv(tmp_path / "nan.csv")
    volts = frame["input.cell_voltage_V"]
    assert volts[hits].isna().all() and volts.drop(index=hits).notna().all()
    column = pq.read_table(export(src, "parquet", tmp_path / "nan.parquet")).column("input.cell_voltage_V")
    assert column.null_count == 3 and all(column[i].as_py() is None for i in hits)


def test_furnace_export_has_batch_columns(furnace_record_path: Path, tmp_path: Path) -> None:
    """A furnace record exports its batch reference and power MV per cycle, as recorded."""
    rec = read_record(furnace_record_path)
    rows = csv_rows(export(furnace_record_path, "csv", tmp_path / "vim.csv"))
    assert len(rows) == len(rec.cycles)
    for name in ("batch.state", "batch.target_degC", "batch.upper_degC", "batch.stage_power_kW",
                 "readback.power_sp_kW", "plan.power_sp_kW", "input.vacuum_gauge_Pa", "estimate.charge_temp_degC"):
        assert name in rows[0], name
    for row, cyc in zip(rows, rec.cycles):
        assert row["batch.state"] == cyc["batch"]["state"]
        target = cyc["batch"]["target_degC"]
        assert (row["batch.target_degC"] == "") if not math.isfinite(target) else float(row["batch.target_degC"]) == target
        assert float(row["readback.power_sp_kW"]) == cyc["readback"]["power_sp"]
    assert any(r["batch.state"] == "running" for r in rows)


def test_default_output_beside_the_record(cell_record_path: Path, tmp_path: Path) -> None:
    """Without --out the file is the record's name with the format's suffix."""
    rec = tmp_path / "unit-1.apcrec"
    rec.write_bytes(cell_record_path.read_bytes())
    assert main(["export", str(rec)]) == 0
    assert (tmp_path / "unit-1.csv").stat().st_size > 0


def test_parquet_without_pyarrow_fails_in_one_line(cell_record_path: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without pyarrow, --format parquet exits 1 with one line naming the extra to install."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", str(cell_record_path), "--format", "parquet", "--out", str(tmp_path / "x.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apc-runtime[export]" in err
    assert not (tmp_path / "x.parquet").exists()
