"""python -m runtime.benchmark (ONNX only) on the tiny fixture model, and export.benchmark_torch (PyTorch eager vs
ONNX); real models are benchmarked by hand."""

import ast
import json

import pytest

from runtime import benchmark
from runtime.benchmark import main
from tests.conftest import REPO


@pytest.fixture
def tiny32(make_model):
    return make_model("tiny.onnx", input_size=32)


def test_benchmark_json_report(tiny32, capsys):
    code = main(["--model", tiny32, "--provider", "cpu", "--sizes", "32,48", "--batches", "1,2",
                 "--repeat", "3", "--webcam-frames", "12", "--json"])
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
    for row in report["pipeline"]:  # both timed (no comparison: 3 runs on a shared machine order nothing)
        assert row["image_path_ms"] > 0 and row["image_path_cpu_ms"] > 0 and row["median_ms"] > 0
    # the webcam's own loop over a generated clip: every frame through
    assert [(w["model"], w["frame"], w["frames"]) for w in report["webcam"]] == [
        ("tiny", "640x480", 12), ("tiny", "1280x720", 12)]
    assert all(w["fps"] > 0 and w["file_fps"] > 0 for w in report["webcam"])  # and the clip as a file
    cpu = report["cpu"]
    assert cpu["name"] and cpu["cores"] >= 1
    assert set(cpu["instruction_sets"]) <= {"AVX2", "AVX-512", "VNNI", "AMX", "unknown"}
    if "avx2" in open("/proc/cpuinfo").read():
        assert "AVX2" in cpu["instruction_sets"]
    assert report["peak_rss_mb"] > 10
    assert "pytorch_eager" not in report  # ONNX only: PyTorch is export.benchmark_torch's job


def test_benchmark_table_and_errors(tiny32, tmp_path, capsys):
    assert main(["--model", tiny32, "--provider", "cpu", "--sizes", "32", "--batches", "1", "--repeat", "1",
                 "--webcam-frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "model only" in out and "full pipeline" in out and "webcam end to end" in out and "peak RSS" in out
    assert out.splitlines()[0].endswith(tuple(benchmark.cpu_info()["instruction_sets"]) or "AVX-512")
    assert main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--model", tiny32, "--repeat", "0"])
    assert exit_.value.code == 2


def test_benchmark_keeps_one_session_alive_at_a_time(make_model, monkeypatch, capsys):
    """Two cores: a second live session's thread pool would steal CPU from the one being timed."""
    alive, most = [0], [0]

    class Counted(benchmark.ColorizerModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            alive[0] += 1
            most[0] = max(most[0], alive[0])

        def __del__(self):
            alive[0] -= 1

    shipped = {"colorizer": make_model("colorizer.onnx", input_size=32),
               "colorizer-int8": make_model("colorizer-int8.onnx", input_size=32, seed=1)}
    monkeypatch.setattr(benchmark, "ColorizerModel", Counted)
    monkeypatch.setattr(benchmark, "shipped_model_path", lambda name: shipped.get(name))
    monkeypatch.setattr(benchmark, "benchmark_models", lambda args: list(shipped.values()))
    assert main(["--provider", "cpu", "--sizes", "32", "--batches", "1", "--repeat", "1", "--webcam-frames", "2",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in report["models"]] == ["colorizer", "colorizer-int8"]
    assert report["default_model"] == "colorizer-int8" and report["pipeline"][0]["model"] == "colorizer-int8"
    assert most[0] == 1 and alive[0] == 0


def test_runtime_benchmark_starts_no_training_or_export_module():
    """No torch in runtime/ is test_packaging's check; this one: no way round it through a subprocess running
    `python -m train...` or `export...` (module names in strings)."""
    tree = ast.parse((REPO / "runtime" / "benchmark.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert "subprocess" not in {name.split(".")[0] for name in imported}
    assert not [s for s in strings if s.startswith(("train.", "export."))]


def test_torch_benchmark_times_both_engines_on_the_same_inputs(tiny32, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from export import benchmark_torch
    from train.models import build_colorizer

    model = build_colorizer("default")
    torch.save({"model": model.state_dict(), "meta": {"preset": "default", "model_kwargs": {"num_bins": len(model.bins)}}},
               tmp_path / "colorizer.pt")
    threads = torch.get_num_threads()
    try:
        assert benchmark_torch.main(["--checkpoint", str(tmp_path / "colorizer.pt"), "--onnx", tiny32, "--sizes", "64",
                                     "--batches", "1,2", "--threads", "1", "--repeat", "2", "--budget", "1",
                                     "--json"]) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark sets it for the process
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key, engine in (("onnx_latency", "tiny"), ("torch_latency", "pytorch-eager")):
        assert [(r["model"], r["size"], r["batch"]) for r in report[key]] == [(engine, 64, 1), (engine, 64, 2)]
        assert all(r["median_ms"] > 0 and r["runs"] == 2 for r in report[key])
    assert report["threads"] == 1 and report["same_model_as_onnx"] is False  # the tiny ONNX is another model


def test_torch_benchmark_without_a_checkpoint_is_an_error(tmp_path, capsys):
    pytest.importorskip("torch")
    from export import benchmark_torch

    assert benchmark_torch.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
