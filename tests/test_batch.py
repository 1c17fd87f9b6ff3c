"""runtime.batch on a real Ray: a two-node cluster on this machine, a worker killed mid-job, an interrupted driver
resumed, and the runtime without Ray. Photos are the examples shrunk to 96 px (about 200 of them, a few broken),
coloured by the shipped int8 model; every output is compared byte for byte with runtime.colorize's."""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest

from runtime import batch
from tests.conftest import REPO, run_module

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='ray is not installed (pip install ".[cpu,ray]")')
MODEL = "colorizer-int8"
PHOTOS = 200
BROKEN = {"truncated.jpg": "truncated or damaged image", "empty.png": "empty file",
          "text.jpg": "not a readable image"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """-> (photos folder, runtime.colorize's outputs for it): 200 small photos and the broken files."""
    root = tmp_path_factory.mktemp("archive")
    photos = root / "photos"
    photos.mkdir()
    examples = sorted((REPO / "examples").glob("*.jpg"))
    for index in range(PHOTOS):
        image = cv2.imread(str(examples[index % len(examples)]))
        height, width = image.shape[:2]
        scale = (96 + index % 7) / max(height, width)  # sizes differ a little, so do the photos
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(photos / f"photo{index:03d}.jpg"), image[:, ::-1] if index % 2 else image)
    (photos / "truncated.jpg").write_bytes((photos / "photo000.jpg").read_bytes()[:600])
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not a photo\n")
    reference = root / "reference"
    result = run_module("runtime.colorize", photos, "-o", reference, "--model", MODEL, check=False)
    assert result.returncode == 1, result.stderr  # the broken files
    return photos, reference


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node (one CPU each) on this machine: two raylets, one actor each."""
    if not HAVE_RAY:
        pytest.skip('ray is not installed (pip install ".[cpu,ray]")')
    from ray.cluster_utils import Cluster

    # every node and driver at 127.0.0.1: the tests address nothing but loopback (batch.LOOPBACK_ONLY)
    previous = os.environ.get(batch.LOOPBACK_ONLY)
    os.environ[batch.LOOPBACK_ONLY] = "0"
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()
    if previous is None:
        os.environ.pop(batch.LOOPBACK_ONLY)
    else:
        os.environ[batch.LOOPBACK_ONLY] = previous


def read_manifest(path: Path) -> list[dict]:
    import pyarrow.parquet

    return pyarrow.parquet.read_table(path).to_pylist()


def assert_outputs_match(out: Path, reference: Path) -> None:
    """Every photo's output is the file runtime.colorize writes, byte for byte (same name, size, pixels), and
    nothing else is in the folder: no temp file, no half-written output."""
    expected = sorted(path.name for path in reference.iterdir())
    assert sorted(path.name for path in out.iterdir() if path.name != "manifest.parquet") == expected
    for name in expected:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def assert_broken_rows(rows: list[dict]) -> None:
    failed = {Path(row["path"]).name: row["error"] for row in rows if row["status"] == "failed"}
    assert sorted(failed) == sorted(BROKEN)
    for name, reason in BROKEN.items():
        assert failed[name].startswith(reason), failed[name]


def batch_command(photos: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "runtime.batch", str(photos), "-o", str(out), "--model", MODEL, *map(str, extra)]


def worker_processes() -> list[int]:
    """PIDs of the batch's Ray actors that this test started (descendants of this process only)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor == os.getpid():
            try:
                if b"ColorizeBatch" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    mine.append(pid)
            except OSError:
                continue
    return mine


def wait_for_outputs(out: Path, count: int, job: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*_color.jpg"))) < count:
        assert job.poll() is None, job.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no outputs appeared"
        time.sleep(0.02)


@needs_ray
@pytest.mark.slow
def test_two_node_cluster_colours_like_runtime_colorize(archive, cluster, tmp_path):
    photos, reference = archive
    out = tmp_path / "out"
    result = run_module("runtime.batch", photos, "-o", out, "--model", MODEL, "--address", cluster.address,
                        "--batch-size", 8, check=False)
    assert result.returncode == 1, result.stderr  # some photos failed
    assert f"{PHOTOS} ok, 0 skipped, {len(BROKEN)} failed" in result.stdout
    for name, reason in BROKEN.items():
        assert f"error: {photos / name}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr
    rows = read_manifest(out / "manifest.parquet")
    assert len(rows) == PHOTOS + len(BROKEN) and len({row["path"] for row in rows}) == len(rows)
    assert_broken_rows(rows)
    ok = [row for row in rows if row["status"] == "ok"]
    assert len({row["node"] for row in ok}) == 2  # both nodes coloured photos
    assert len({row["model_sha256"] for row in ok}) == 1 and all(row["milliseconds"] > 0 for row in ok)
    assert_outputs_match(out, reference)


@needs_ray
@pytest.mark.slow
def test_killed_worker_every_photo_done_once(archive, cluster, tmp_path):
    photos, reference = archive
    out = tmp_path / "out"
    job = subprocess.Popen(batch_command(photos, out, "--address", cluster.address, "--batch-size", 2), cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_outputs(out, 20, job)
    victims = worker_processes()
    assert victims, "no batch worker process found"
    os.kill(victims[0], signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 1, stderr[-3000:]
    rows = read_manifest(out / "manifest.parquet")
    assert sorted(Path(row["path"]).name for row in rows) == sorted(path.name for path in photos.iterdir())
    assert sum(row["status"] in ("ok", "skipped") for row in rows) == PHOTOS  # each once; redone batches skip
    assert_broken_rows(rows)
    assert_outputs_match(out, reference)  # no half-written output, no temp file left


@needs_ray
@pytest.mark.slow
def test_interrupted_driver_resumes_without_colouring_twice(archive, tmp_path):
    """A local Ray (no --address): SIGINT to the driver, then the same command again."""
    photos, reference = archive
    out = tmp_path / "out"
    job = subprocess.Popen(batch_command(photos, out, "--batch-size", 2), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for_outputs(out, 30, job)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert "interrupted:" in stderr and "Traceback" not in stderr
    first = read_manifest(out / "manifest.parquet")  # the rows done before the interrupt
    time.sleep(1.0)  # the local Ray's workers stop once their raylet is gone
    done = {path: path.stat().st_mtime_ns for path in out.glob("*_color.jpg")}
    assert 30 <= len(done) < PHOTOS
    assert {row["output"] for row in first if row["status"] == "ok"} <= {str(path) for path in done}
    result = subprocess.run(batch_command(photos, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = read_manifest(out / "manifest.parquet")
    coloured = {row["output"] for row in rows if row["status"] == "ok"}
    assert not coloured & {str(path) for path in done}  # nothing coloured twice
    assert len(coloured) == PHOTOS - len(done)
    assert {path: path.stat().st_mtime_ns for path in done} == done
    made_first = {row["output"]: row["model_sha256"] for row in first if row["status"] == "ok"}
    assert all(row["model_sha256"] == made_first[row["output"]] for row in rows if row["output"] in made_first)
    assert_broken_rows(rows)
    assert_outputs_match(out, reference)


BAN_RAY = """
import importlib.abc, sys
class Ban(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            raise ImportError(f"{name} is banned in this test")
sys.meta_path.insert(0, Ban())
"""


def test_runtime_imports_without_ray(tmp_path):
    """Without ray the runtime (runtime.batch included) imports and colours; the batch command says which extra to
    install, in one line, and exits 2."""
    ban = tmp_path / "ban"
    ban.mkdir()
    (ban / "sitecustomize.py").write_text(textwrap.dedent(BAN_RAY))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ban), str(REPO)])}
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.imread(str(REPO / "examples" / "rose.jpg"))[:64, :64])

    def python(*args):
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)

    assert python("-c", "import ray").returncode != 0  # the ban is in force
    assert python("-c", "import runtime, runtime.batch, runtime.colorize").returncode == 0
    result = python("-m", "runtime.batch", "a.jpg", "-o", "out", "--model", MODEL)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "[cpu,ray]" in result.stderr
    assert python("-m", "runtime.colorize", "a.jpg", "-o", "out", "--model", MODEL).returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow comes with the ray extra")
def test_lists_of_photos(tmp_path):
    """.txt, .csv and .parquet lists: entries relative to the list's folder; the outputs go flat into -o; clashing
    outputs, videos and outputs onto inputs are refused by name before any work."""
    import pyarrow
    import pyarrow.parquet

    from runtime.batch import find_photos, plan

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one.jpg\n# a comment\n\n/abs/two.png\n")
    (tmp_path / "b.csv").write_text("id,path\n1,a/three.jpg\n2,a/one.jpg\n")
    pyarrow.parquet.write_table(pyarrow.table({"path": ["clip.mp4", "out/four_color.jpg"]}), tmp_path / "c.parquet")
    out = tmp_path / "out"
    found, failures = find_photos([str(tmp_path / "a" / "x.txt"), str(tmp_path / "b.csv"),
                                   str(tmp_path / "c.parquet"), str(tmp_path / "missing.txt")], out, False)
    assert [path for path, _ in found] == [f"{tmp_path}/a/one.jpg", "/abs/two.png", f"{tmp_path}/a/three.jpg",
                                           f"{tmp_path}/a/one.jpg", f"{tmp_path}/clip.mp4",
                                           f"{tmp_path}/out/four_color.jpg"]
    assert [output for _, output in found][:3] == [str(out / "one_color.jpg"), str(out / "two_color.png"),
                                                    str(out / "three_color.jpg")]
    assert failures[0][0].endswith("missing.txt") and failures[0][1].startswith("cannot read this list")
    work, refused = plan(found + [(str(out / "five_color.jpg"), str(out / "five_color_color.jpg")),
                                  (str(tmp_path / "four.jpg"), str(out / "four_color.jpg"))])
    assert [path for path, _ in work] == [f"{tmp_path}/a/one.jpg", "/abs/two.png", f"{tmp_path}/a/three.jpg",
                                          f"{tmp_path}/out/four_color.jpg", str(out / "five_color.jpg")]
    reasons = [reason for _, _, reason in refused]
    assert "is also the output of" in reasons[0] and "video" in reasons[1] and "overwrite an input" in reasons[2]


@needs_ray
def test_actor_rows_and_a_node_with_another_model(tmp_path):
    """The actor class itself, called as Ray Data calls it: ok, skipped and failed rows; with a model file that is
    not the driver's (sha256 differs) every row fails with that reason and nothing is written."""
    import pyarrow

    from runtime.batch import ColorizeBatch, file_sha256
    from runtime.model import resolve_model

    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), cv2.imread(str(REPO / "examples" / "rose.jpg"))[:48, :64])
    (tmp_path / "done_color.jpg").write_bytes(b"made earlier")
    batch = pyarrow.table({"path": [str(photo), str(tmp_path / "done.jpg"), str(tmp_path / "missing.jpg")],
                           "output": [str(tmp_path / "out" / "a_color.jpg"), str(tmp_path / "done_color.jpg"),
                                      str(tmp_path / "out" / "missing_color.jpg")]})
    sha256 = file_sha256(resolve_model(MODEL))
    rows = ColorizeBatch(MODEL, "cpu", None, None, 1, sha256)(batch).to_pylist()
    assert [row["status"] for row in rows] == ["ok", "skipped", "failed"]
    assert rows[0]["model_sha256"] == sha256 and rows[1]["model_sha256"] == "" and rows[2]["error"]
    assert (tmp_path / "out" / "a_color.jpg").is_file()
    other = pyarrow.table({"path": [str(photo)], "output": [str(tmp_path / "other" / "a_color.jpg")]})
    rows = ColorizeBatch(MODEL, "cpu", None, None, 1, "0" * 64)(other).to_pylist()
    assert rows[0]["status"] == "failed" and "is not the driver's" in rows[0]["error"]
    assert not (tmp_path / "other").exists()
