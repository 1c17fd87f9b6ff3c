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
    from argparse import Namespace

    from runtime import benchmark

    (tmp_path / "colorizer.pt").write_bytes(b"a checkpoint that must not be opened")
    monkeypatch.setattr(benchmark, "REPO_CHECKPOINTS", tmp_path)
    monkeypatch.setattr(benchmark.importlib.util, "find_spec", lambda name: None)  # as in a torch-free venv
    result = benchmark.pytorch_eager(Namespace(threads=None, repeat=1, budget=1.0), [32], [1], {})
    assert "not installed" in result["skipped"]


def test_pytorch_comparison_runs_in_its_own_process(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from argparse import Namespace

    from runtime import benchmark
    from train.models import build_colorizer

    model = build_colorizer("default")
    torch.save({"model": model.state_dict(), "meta": {"preset": "default", "model_kwargs": {"num_bins": len(model.bins)}}},
               tmp_path / "colorizer.pt")
    monkeypatch.setattr(benchmark, "REPO_CHECKPOINTS", tmp_path)
    result = benchmark.pytorch_eager(Namespace(threads=1, repeat=2, budget=1.0), [64], [1, 2], {})
    assert [(r["size"], r["batch"]) for r in result["latency"]] == [(64, 1), (64, 2)]
    assert all(r["median_ms"] > 0 for r in result["latency"])
    assert result["same_model_as_onnx"] is False  # no ONNX metadata given to compare with
