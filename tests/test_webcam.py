"""python -m runtime.webcam: file sources and recordings, the capture thread, errors, and the real OpenCV window
under a virtual X display (Xvfb; keys sent with xdotool)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.video import FrameReader, Recorder, open_source
from runtime.webcam import VIEWS, KeyState, main, on_key
from tests.conftest import REPO, make_tiny_colorizer

HEIGHT, WIDTH = 120, 160


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_colorizer(tmp_path / "tiny.onnx", input_size=48)


BITS, BLOCK = 8, 20  # frame numbers are written into each frame as a row of black / white blocks


def make_video(path: Path, frames: int, fps: float = 24.0) -> Path:
    """Frame i: a textured colour picture, slowly changing, with i in binary in its top row of blocks (colorizing
    keeps L*, so the number survives colorizing and lossy mp4v coding)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        image = np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0.4 * np.sin((x + 2 * i) / 9.0)], axis=2) * 120 + 60
        for bit in range(BITS):
            image[:16, bit * BLOCK:(bit + 1) * BLOCK] = 235 if (i >> bit) & 1 else 20
        writer.write(image.astype(np.uint8))
    writer.release()
    return path


def frame_number(frame: np.ndarray) -> int:
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return sum(1 << bit for bit in range(BITS) if gray[4:12, bit * BLOCK + 5:(bit + 1) * BLOCK - 5].mean() > 128)


def read_video(path: Path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def run(argv, tiny, capsys):
    try:
        code = main([*map(str, argv), "--model", str(tiny), "--provider", "cpu"])
    except SystemExit as exit_:  # usage, source, display and model errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- file sources and recordings

def test_recording_from_a_file_keeps_every_frame_in_order(tmp_path, tiny, capsys):
    source = make_video(tmp_path / "clip.mp4", frames=30, fps=24.0)
    target = tmp_path / "out" / "rec.mp4"
    code, out, err = run(["--source", source, "--no-display", "--record", target, "--view", "color"], tiny, capsys)
    assert code == 0, err
    assert f"recording: {target} (30 frames, 24 fps)" in out
    assert "stopped (end of stream): 30 frames" in out and "fps end to end" in out
    frames, fps = read_video(target)
    assert len(frames) == 30 and fps == pytest.approx(24.0)
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    assert [frame_number(frame) for frame in frames] == list(range(30))
    originals, _ = read_video(source)
    assert np.abs(frames[5].astype(int) - originals[5]).mean() > 5  # recoloured by the model, not passed through
    assert sorted(p.name for p in target.parent.iterdir()) == ["rec.mp4"]  # no temp file left behind


def test_off_a_terminal_no_progress_bar_but_one_summary_line(tmp_path, tiny, capsys):
    """A log gets no carriage-return progress updates, only the summary (pytest's capture is no terminal)."""
    source = make_video(tmp_path / "clip.mp4", frames=40, fps=24.0)
    code, out, err = run(["--source", source, "--no-display"], tiny, capsys)
    assert code == 0, err
    assert "\r" not in err and "frame/s" not in err and "it/s" not in err
    (summary,) = [line for line in out.splitlines() if line.startswith("stopped")]
    assert summary.startswith("stopped (end of stream): 40 frames in") and "fps end to end" in summary


def test_model_stage_keeps_the_frame_order_and_the_smoothing(tmp_path, tiny):
    """The model's half of the image path on its own thread gives, frame by frame, what the one-thread image path
    with the same smoother gives (the order the smoother sees frames in is unchanged)."""
    from runtime import color
    from runtime.model import ColorizerModel
    from runtime.smoothing import AbSmoother
    from runtime.webcam import END, ModelStage

    model = ColorizerModel(tiny, provider="cpu")
    source = make_video(tmp_path / "clip.mp4", frames=12)
    reader = FrameReader(open_source(None, str(source)))
    stage = ModelStage(model, reader, AbSmoother(0.6))
    smoother, decoded = AbSmoother(0.6), read_video(source)[0]
    try:
        for index in range(len(decoded)):
            frame, ab = stage.get(timeout=10)
            np.testing.assert_array_equal(frame, decoded[index])
            np.testing.assert_array_equal(color.merge_ab(frame, ab), model.colorize_bgr(frame, ab_filter=smoother))
        assert stage.get(timeout=10) is END
    finally:
        stage.stop()
        reader.stop()


def test_side_by_side_recording_and_max_frames(tmp_path, tiny, capsys):
    source = make_video(tmp_path / "clip.mp4", frames=30, fps=15.0)
    target = tmp_path / "sbs.mp4"
    code, out, err = run(["--source", source, "--no-display", "--record", target, "--max-frames", "10",
                          "--smooth", "0"], tiny, capsys)
    assert code == 0, err
    assert "stopped (--max-frames 10): 10 frames" in out
    frames, fps = read_video(target)
    assert len(frames) == 10 and fps == pytest.approx(15.0)
    assert frames[0].shape == (HEIGHT, 2 * WIDTH, 3)
    left, right = frames[3][:, :WIDTH].astype(int), frames[3][:, WIDTH:].astype(int)
    assert np.abs(left - left[..., ::-1]).mean() < 2 < np.abs(right - right[..., ::-1]).mean()  # gray | colour


def test_image_sequence_source(tmp_path, tiny, capsys):
    frames, _ = read_video(make_video(tmp_path / "clip.mp4", frames=5))
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), frame)
    code, out, err = run(["--source", tmp_path / "frame_%03d.png", "--no-display"], tiny, capsys)
    assert code == 0, err
    assert "stopped (end of stream): 5 frames" in out


# ---------------------------------------------------------------- the capture thread

def test_reader_gives_a_file_every_frame_in_order(tmp_path):
    source = open_source(None, str(make_video(tmp_path / "clip.mp4", frames=40)))
    assert not source.live
    reader = FrameReader(source)
    numbers = []
    while (frame := reader.read()) is not None:
        numbers.append(frame_number(frame))
        time.sleep(0.005)  # a model slower than the decoder must not lose frames
    reader.stop()
    assert reader.finished and reader.dropped == 0
    assert numbers == list(range(40))


def test_reader_keeps_only_the_newest_frame_of_a_live_source(tmp_path):
    """A source decoding faster than its consumer, marked live as a camera is: the consumer always gets the newest
    frame, and the ones it missed are dropped (and counted) rather than queued."""
    source = open_source(None, str(make_video(tmp_path / "clip.mp4", frames=60)))
    source.live = True
    reader = FrameReader(source)
    deadline = time.monotonic() + 30
    while reader.dropped < 59 and time.monotonic() < deadline:  # the consumer is away while the clip decodes
        time.sleep(0.05)
    indices = []
    while (frame := reader.read(timeout=5.0)) is not None:
        indices.append(frame_number(frame))
    reader.stop()
    assert indices == [59]  # only the newest frame was waiting
    assert reader.dropped == 59


def test_live_recording_keeps_real_time(tmp_path):
    """A live source is recorded at a fixed fps whatever the model's pace: slow frames are repeated, fast ones
    skipped, so the video lasts as long as the recording did."""
    for pace, fps in ((0.1, 20.0), (0.005, 10.0)):  # slower, then faster than the recording's fps
        recorder = Recorder(tmp_path / f"live-{fps:g}.mp4", fps, "color", realtime=True)
        image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
        began = time.monotonic()
        for _ in range(10 if pace > 0.05 else 100):
            recorder.write(image)
            last = time.monotonic()
            time.sleep(pace)
        assert recorder.stop()
        expected = int((last - began) * fps) + 1
        frames, recorded_fps = read_video(recorder.target)
        assert abs(len(frames) - expected) <= 1 and recorded_fps == pytest.approx(fps)
        assert len(frames) == recorder.frames


# ---------------------------------------------------------------- keys (no display needed)

def test_keys():
    state = KeyState("side-by-side")
    assert on_key(-1, state) == (state, None)  # cv2.waitKey: no key
    assert on_key(ord("x"), state) == (state, None)
    assert on_key(ord("q"), state)[1] == "quit" and on_key(27, state)[1] == "quit"
    paused, action = on_key(ord(" "), state)
    assert paused == KeyState("side-by-side", paused=True) and action == "pause"
    assert on_key(ord(" "), paused) == (state, "resume")
    views = []
    for _ in range(len(VIEWS)):
        state, action = on_key(ord("v"), state)
        assert action == "view"
        views.append(state.view)
    assert views == ["color", "gray", "side-by-side"]
    assert on_key(ord("s"), paused) == (paused, "snapshot")  # a snapshot or a recording keeps the state
    assert on_key(ord("r"), paused) == (paused, "record")
    assert on_key(0x100 | ord("q"), state)[1] == "quit"  # waitKey's high bits (modifiers) are ignored


# ---------------------------------------------------------------- errors

def test_bad_camera_index(tiny, capsys):
    code, out, err = run(["--camera", "57", "--no-display"], tiny, capsys)
    assert code == 2
    assert err.startswith("error: cannot open camera 57 (")
    if sys.platform.startswith("linux"):
        assert "/dev/video57" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("problem", ["missing", "empty", "not-a-video", "folder"])
def test_bad_source(tmp_path, tiny, capsys, problem):
    path = tmp_path / "clip.mp4"
    if problem == "empty":
        path.touch()
    elif problem == "not-a-video":
        path.write_text("hello")
    elif problem == "folder":
        path.mkdir()
    code, out, err = run(["--source", path, "--no-display"], tiny, capsys)
    assert code == 2
    assert err.startswith("error: ") and str(path) in err and len(err.strip().splitlines()) == 1


def test_bad_model(tmp_path, capsys):
    source = make_video(tmp_path / "clip.mp4", frames=3)
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", str(source), "--no-display", "--model", str(tmp_path / "none.onnx")])
    assert exit_info.value.code == 2
    assert "error: model file not found" in capsys.readouterr().err


def test_record_never_overwrites_the_source(tmp_path, tiny):
    source = make_video(tmp_path / "clip.mp4", frames=3)
    before = source.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", str(source), "--record", str(source), "--no-display", "--model", str(tiny)])
    assert exit_info.value.code == 2
    assert source.read_bytes() == before


def test_no_display_says_use_no_display(tmp_path, tiny, capsys, monkeypatch):
    source = make_video(tmp_path / "clip.mp4", frames=3)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, out, err = run(["--source", source], tiny, capsys)
    assert code == 2
    assert err.strip() == "error: no display available (DISPLAY is not set); use --no-display"
    # a display that does not answer: Qt would abort the process, so it is tried in a throwaway one first
    monkeypatch.setenv("DISPLAY", ":" + str(free_display_number()))
    code, out, err = run(["--source", source], tiny, capsys)
    assert code == 2
    assert "cannot open a window on display" in err and "use --no-display" in err


# ---------------------------------------------------------------- the window, on a virtual display

def free_display_number() -> int:
    number = 90
    while Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
        number += 1
    return number


@pytest.fixture
def xvfb():
    """A virtual X display of our own; Xvfb picks a free display number itself (-displayfd)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    server = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        number = server.stdout.readline().strip()
        if not number.isdigit():
            pytest.fail("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def cli(tmp_path, display, *args):
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "runtime.webcam", *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_window_shows_frames_and_stops_at_max_frames(tmp_path, tiny, xvfb):
    source = make_video(tmp_path / "clip.mp4", frames=60, fps=60.0)
    process = cli(tmp_path, xvfb, "--source", source, "--model", tiny, "--provider", "cpu", "--max-frames", "20")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "stopped (--max-frames 20): 20 frames" in out


@pytest.mark.slow
def test_window_keys(tmp_path, tiny, xvfb):
    """s saves the side-by-side view, v switches to colour, r starts and stops a recording of it, space pauses,
    q quits; all in a real Qt window, keys sent by xdotool."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (Debian: apt-get install xdotool)")
    source = make_video(tmp_path / "clip.mp4", frames=600, fps=30.0)  # 20 s: plenty of time for the keys
    process = cli(tmp_path, xvfb, "--source", source, "--model", tiny, "--provider", "cpu")
    env = {**os.environ, "DISPLAY": xvfb}

    def xdotool(*args):
        return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=60)

    try:
        for _ in range(5):  # xdotool's search fails with BadWindow when a window (Qt's transient ones) closes mid-query
            found = xdotool("search", "--sync", "--name", "^colorizer")
            if found.returncode == 0 or "BadWindow" not in found.stderr:
                break
            time.sleep(0.5)
        assert found.returncode == 0, found.stderr
        window = found.stdout.split()[0]
        for key, pause in (("s", 0.5), ("v", 0.5), ("r", 1.0), ("r", 0.5), ("space", 0.5), ("space", 0.5),
                           ("q", 0)):
            xdotool("key", "--window", window, key)
            time.sleep(pause)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1].startswith("stopped (quit): ")
    snapshot = tmp_path / next(line.split(": ", 1)[1] for line in lines if line.startswith("snapshot: "))
    assert cv2.imread(str(snapshot)).shape == (HEIGHT, 2 * WIDTH, 3)
    assert "view: color" in lines and "paused" in lines and "resumed" in lines
    recording = next(line for line in lines if line.startswith("recording: "))
    name = recording.split(": ", 1)[1].split(" (")[0]
    frames, fps = read_video(tmp_path / name)
    assert 5 <= len(frames) and fps == pytest.approx(30.0)
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
