"""python -m runtime.benchmark on the tiny fixture model (real models are benchmarked by hand)."""

import json

import pytest

from runtime.benchmark import main
from tests.onnx_fixtures import make_tiny_colorizer


def test_benchmark_json_report(tmp_path, capsys):
    tiny = make_tiny_colorizer(tmp_path / "tiny.onnx", input_size=32)
    code = main(["--model", str(tiny), "--provider", "cpu", "--sizes", "32,48", "--batches", "1,2",
                 "--repeat", "3", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["provider"] == "CPUExecutionProvider"
    assert [m["model"] for m in report["models"]] == ["tiny"] and report["models"][0]["session_start_ms"] > 0
    assert [(r["size"], r["batch"]) for r in report["latency"]] == [(32, 1), (32, 2), (48, 1), (48, 2)]
    for row in report["latency"]:
        assert row["median_ms"] > 0 and row["runs"] == 3
        assert row["img_per_s"] == pytest.approx(row["batch"] * 1000 / row["median_ms"])
    assert [p["frame"] for p in report["pipeline"]] == ["640x480", "1280x720"]
    assert report["pipeline"][0]["model_size"] == "32x43"
    assert report["peak_rss_mb"] >= report["peak_rss_mb_onnxruntime"] > 10
    assert "skipped" in report["pytorch_eager"] or report["pytorch_eager"]["latency"]


def test_benchmark_table_and_errors(tmp_path, capsys):
    tiny = make_tiny_colorizer(tmp_path / "tiny.onnx", input_size=32)
    assert main(["--model", str(tiny), "--provider", "cpu", "--sizes", "32", "--batches", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "model only" in out and "full pipeline" in out and "peak RSS" in out
    assert main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(tiny), "--repeat", "0"])
    assert exit_.value.code == 2


def test_pytorch_comparison_is_skipped_cleanly_without_torch(tmp_path, monkeypatch):
    import importlib.abc
    import sys
    from argparse import Namespace

    from runtime import benchmark

    class BanTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "train"):
                raise ImportError(f"{name} is banned in this test")

    for name in [n for n in sys.modules if n.split(".")[0] in ("torch", "train")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [BanTorch(), *sys.meta_path])
    (tmp_path / "colorizer.pt").write_bytes(b"a checkpoint that must not be opened")
    monkeypatch.setattr(benchmark, "REPO_CHECKPOINTS", tmp_path)
    args = Namespace(threads=None, repeat=1, budget=1.0)
    result = benchmark.pytorch_eager(args, [32], [1], {})
    assert "not importable" in result["skipped"]
