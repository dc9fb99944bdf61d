"""check-config's checks: offline ones (device, slice grid) and --connect (tables, columns, types)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import torch

from driftmon.checks import connect_checks, offline_checks
from driftmon.config import parse_config
from tests.sourcedata import create_and_fill, events_table


def config_for(url, features=None, **extra):
    raw = {"database": {"url": url}, **extra.pop("top", {}),
           "monitors": [{"name": "m", "source": {"kind": "events", "table": "inference_log",
                                                 "timestamp_column": "ts"},
                         "features": features or [{"column": "amount"}, {"column": "country", "type": "categorical"}],
                         **extra}]}
    return parse_config(raw, {})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_problem_offline():
    report = offline_checks(config_for("sqlite://", top={"compute": {"device": "cuda"}}))
    assert any(p.startswith("compute.device:") for p in report.problems), report.problems


def test_slice_grid_is_reported():
    assert offline_checks(config_for("sqlite://")).notes == ["m: slices of 0:05:00, late rows counted for 0:05:00"]
    bad = offline_checks(config_for("sqlite://", slice="7m"))
    assert bad.problems == ["monitors[0].slice: slice 0:07:00 does not divide the window size (1:00:00) "
                            "and the schedule's grid (0:05:00)"]
    odd = offline_checks(config_for("sqlite://", schedule={"every": "1500ms"}))
    assert odd.problems == [] and "each cycle counts its whole window" in odd.notes[0]


def test_connect_checks_tables_columns_and_types(engine, db_url):
    assert connect_checks(config_for(db_url)) == [
        "monitors[0].source: monitor 'm', table 'inference_log', check-config --connect: "
        "table 'inference_log' does not exist"]
    create_and_fill(engine, events_table(), [])
    assert connect_checks(config_for(db_url)) == []
    missing = connect_checks(config_for(db_url, [{"column": "amount"}, {"column": "tenure"}]))
    assert len(missing) == 1 and "has no column(s) 'tenure'" in missing[0]
    text = connect_checks(config_for(db_url, [{"column": "country"}]))
    assert len(text) == 1 and "column 'country' is declared numeric but its type is VARCHAR" in text[0]


def test_connect_names_an_unopenable_url():
    config = parse_config({"monitors": [{"name": "m", "features": [{"column": "x"}],
                                         "source": {"kind": "events", "table": "t", "timestamp_column": "ts",
                                                    "url": "postgresql+nodriver://u@h/db"}}]}, {})
    problems = connect_checks(config)
    assert len(problems) == 1 and problems[0].startswith("monitors[0].source.url: cannot open it:")


def test_sqlite_engine_for_connect_is_disposed(tmp_path):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    create_and_fill(engine, events_table(), [])
    engine.dispose()
    assert connect_checks(config_for(url)) == []


def test_bad_urls_are_problems_offline_with_their_key_paths():
    config = parse_config({"database": {"url": "postgresql://u:pw@db:abc/x"}, "monitors": [
        {"name": "m", "features": [{"column": "x"}],
         "source": {"kind": "events", "table": "t", "timestamp_column": "ts",
                    "url": "postgresql+nodriver://u@h/d"}}]}, {})
    problems = offline_checks(config).problems
    assert problems[0].startswith("database.url: not a valid database URL (bad port)") and "pw" not in problems[0]
    assert problems[1].startswith("monitors[0].source.url: no SQLAlchemy dialect or driver 'postgresql+nodriver'")
