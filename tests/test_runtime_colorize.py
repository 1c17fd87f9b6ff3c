"""python -m runtime.colorize: every input kind, every bad input, outputs and videos."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime import color
from runtime.colorize import main
from runtime.images import apply_orientation, exif_orientation, read_image
from tests.conftest import REPO, make_tiny_colorizer


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_colorizer(tmp_path / "tiny.onnx", input_size=32)


def picture(height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 5.0)], axis=2) * 200 + 20
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def run(argv, tiny, capsys):
    try:
        code = main([*map(str, argv), "--model", str(tiny), "--provider", "cpu"])
    except SystemExit as exit_:  # usage and model errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_lightness_kept(output, source, tolerance=1.0, lossy=False):
    """L* of the output equals the input's where no colour channel was clipped (clipping moves L); after lossy
    re-encoding (JPEG chroma subsampling) only on average."""
    out_l, in_l = color.lightness(output), color.lightness(source)
    peak = np.iinfo(output.dtype).max
    in_gamut = np.all((output > 0) & (output < peak), axis=2)
    assert in_gamut.mean() > 0.3
    difference = np.abs(out_l - in_l)[in_gamut]
    assert (difference.mean() if lossy else difference.max()) <= tolerance


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_each_image_format(tmp_path, tiny, capsys, suffix):
    source = tmp_path / f"photo{suffix}"
    cv2.imwrite(str(source), picture(), [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101 = lossless WebP
    code, out, err = run([source, "-o", tmp_path / "out"], tiny, capsys)
    assert code == 0, err
    result = cv2.imread(str(tmp_path / "out" / f"photo_color{suffix}"), cv2.IMREAD_UNCHANGED)
    assert result.shape == (48, 64, 3) and result.dtype == np.uint8
    decoded = cv2.imread(str(source))
    assert_lightness_kept(result, decoded, lossy=suffix in (".jpg", ".webp"))
    assert "1 ok, 0 skipped, 0 failed" in out


def test_default_output_folder_and_colour_input_is_recoloured(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = picture()
    cv2.imwrite("a.png", image)
    lightness = color.lightness(image)
    neutral = color.lab_to_bgr(cv2.merge([lightness, np.zeros_like(lightness), np.zeros_like(lightness)]))
    gray = np.clip(neutral[..., 0] * 255 + 0.5, 0, 255).astype(np.uint8)  # same L*, no colour
    cv2.imwrite("g.png", gray)
    assert run(["a.png", "g.png"], tiny, capsys)[0] == 0
    from_colour = cv2.imread("colorized/a_color.png")
    from_gray = cv2.imread("colorized/g_color.png")
    assert from_gray.shape == (48, 64, 3)
    # the model sees only L: a colour photo and its gray version get (almost) the same colours
    assert np.abs(from_colour.astype(int) - from_gray).mean() < 3
    assert np.abs(from_colour.astype(int) - image).mean() > 3


def test_alpha_is_kept(tmp_path, tiny, capsys):
    bgra = np.dstack([picture(), np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))])
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    gray = cv2.cvtColor(picture(), cv2.COLOR_BGR2GRAY)
    Image.fromarray(np.dstack([gray, bgra[..., 3]]), "LA").save(tmp_path / "la.png")
    assert run([tmp_path / "rgba.png", tmp_path / "la.png", "-o", tmp_path / "out"], tiny, capsys)[0] == 0
    for name, source in (("rgba_color.png", bgra[..., :3]), ("la_color.png", gray)):
        result = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert result.shape == (48, 64, 4)
        np.testing.assert_array_equal(result[..., 3], bgra[..., 3])
        assert_lightness_kept(result[..., :3], source)


def test_16_bit_stays_16_bit(tmp_path, tiny, capsys):
    image16 = picture().astype(np.uint16) * 257 + 100
    cv2.imwrite(str(tmp_path / "deep.png"), image16)
    cv2.imwrite(str(tmp_path / "deepgray.tiff"), cv2.cvtColor(image16, cv2.COLOR_BGR2GRAY))
    assert run([tmp_path / "deep.png", tmp_path / "deepgray.tiff", "-o", tmp_path / "out"], tiny, capsys)[0] == 0
    result = cv2.imread(str(tmp_path / "out" / "deep_color.png"), cv2.IMREAD_UNCHANGED)
    assert result.dtype == np.uint16 and result.shape == (48, 64, 3)
    assert_lightness_kept(result, image16, tolerance=0.05)  # 16 bits carry L far more finely than 8
    gray = cv2.imread(str(tmp_path / "out" / "deepgray_color.tiff"), cv2.IMREAD_UNCHANGED)
    assert gray.dtype == np.uint16 and gray.shape == (48, 64, 3)


def save_with_orientation(path, rgb, orientation):
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    save_with_orientation(path, picture(40, 60)[..., ::-1], orientation)
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_exif_rotated_photo_is_colorized_upright(tmp_path, tiny, capsys):
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, picture(40, 60)[..., ::-1], 6)
    assert run([path, "-o", tmp_path / "out"], tiny, capsys)[0] == 0
    result = cv2.imread(str(tmp_path / "out" / "phone_color.jpg"), cv2.IMREAD_UNCHANGED)
    assert result.shape == (60, 40, 3)
    assert_lightness_kept(result, cv2.imread(str(path)), lossy=True)


def test_exif_parser_on_both_byte_orders():
    little = b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x08\x00\x00\x00"
    big = b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x03\x00\x00"
    assert exif_orientation(little) == 8 and exif_orientation(big) == 3
    assert exif_orientation(b"Exif\x00\x00" + big) == 3
    assert exif_orientation(b"garbage") == 1 and exif_orientation(big[:12]) == 1
    image = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(apply_orientation(image, 6), np.rot90(image, -1))
    np.testing.assert_array_equal(apply_orientation(image, 8), np.rot90(image, 1))


def test_cmyk_jpeg(tmp_path, tiny, capsys):
    path = tmp_path / "print.jpg"
    Image.fromarray(picture()[..., ::-1]).convert("CMYK").save(path, quality=95)
    assert run([path, "-o", tmp_path / "out"], tiny, capsys)[0] == 0
    result = cv2.imread(str(tmp_path / "out" / "print_color.jpg"))
    assert result.shape == (48, 64, 3)
    assert_lightness_kept(result, cv2.imread(str(path)), lossy=True)


def test_folders_recursive_and_globs(tmp_path, tiny, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("photos/a.png", "photos/b.jpg", "photos/sub/c.png", "photos/sub/a.png"):
        cv2.imwrite(str(tmp_path / name), picture())
    (photos / "notes.txt").write_text("not an image")  # ignored in folder scans
    code, out, _ = run([photos, "-o", tmp_path / "flat"], tiny, capsys)
    assert code == 0 and sorted(os.listdir(tmp_path / "flat")) == ["a_color.png", "b_color.jpg"]
    code, out, _ = run([photos, "--recursive", "-o", tmp_path / "deep"], tiny, capsys)
    assert code == 0 and "4 ok" in out
    assert (tmp_path / "deep/sub/c_color.png").is_file() and (tmp_path / "deep/sub/a_color.png").is_file()
    code, out, _ = run([str(photos / "*.png"), "-o", tmp_path / "glob"], tiny, capsys)
    assert code == 0 and os.listdir(tmp_path / "glob") == ["a_color.png"]


def test_off_a_terminal_no_progress_bar_only_the_summary(tmp_path, tiny, capsys):
    """A log (pytest's capture is no terminal) gets no carriage-return updates of files or video frames."""
    cv2.imwrite(str(tmp_path / "a.png"), picture())
    make_video(tmp_path / "clip.avi", "MJPG")
    code, out, err = run([tmp_path / "a.png", tmp_path / "clip.avi", "-o", tmp_path / "out"], tiny, capsys)
    assert code == 0 and "2 ok" in out, err
    assert "\r" not in err and "file/s" not in err and "frame/s" not in err


def test_rerun_in_place_skips_previous_outputs(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("a.png", picture())
    assert run([".", "--recursive"], tiny, capsys)[0] == 0
    code, out, err = run([".", "--recursive"], tiny, capsys)
    assert code == 0 and "0 ok, 1 skipped" in out and "exists" in err
    assert not Path("colorized/a_color_color.png").exists()


def test_existing_outputs_are_not_overwritten_without_flag(tmp_path, tiny, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), picture())
    target = tmp_path / "out" / "a_color.png"
    target.parent.mkdir()
    target.write_bytes(b"keep me")
    code, out, err = run([tmp_path / "a.png", "-o", tmp_path / "out"], tiny, capsys)
    assert code == 0 and target.read_bytes() == b"keep me" and "--overwrite" in err
    code, out, err = run([tmp_path / "a.png", "-o", tmp_path / "out", "--overwrite"], tiny, capsys)
    assert code == 0 and cv2.imread(str(target)).shape == (48, 64, 3)
    assert [p.name for p in target.parent.iterdir()] == ["a_color.png"]  # no temp files left behind


def test_output_never_replaces_an_input(tmp_path, tiny, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), picture())
    cv2.imwrite(str(tmp_path / "a_color.png"), picture(seed=1))
    before = (tmp_path / "a_color.png").read_bytes()
    code, out, err = run([tmp_path / "a.png", tmp_path / "a_color.png", "-o", tmp_path, "--overwrite"], tiny, capsys)
    assert code == 1 and "would overwrite an input" in err
    assert (tmp_path / "a_color.png").read_bytes() == before
    assert (tmp_path / "a_color_color.png").is_file()


def test_clashing_outputs_are_reported(tmp_path, tiny, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), picture())
    code, out, err = run([tmp_path / "x/a.png", tmp_path / "y/a.png", "-o", tmp_path / "out"], tiny, capsys)
    assert code == 1 and "also the output of" in err and "1 ok" in out


def test_side_by_side(tmp_path, tiny, capsys):
    image = picture()
    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert run([tmp_path / "a.png", "-o", tmp_path / "out", "--side-by-side"], tiny, capsys)[0] == 0
    result = cv2.imread(str(tmp_path / "out" / "a_color.png"))
    assert result.shape == (48, 128, 3)
    np.testing.assert_array_equal(result[:, :64], image)


def test_bad_inputs_are_reported_and_the_rest_processed(tmp_path, tiny, capsys):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), picture())
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(os.urandom(300))
    (tmp_path / "notes.txt").write_text("hello")
    cv2.imwrite(str(tmp_path / "whole.jpg"), picture())
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "broken.mp4").write_bytes(os.urandom(2000))
    (tmp_path / "empty-folder").mkdir()
    bad = ["missing.png", "empty.jpg", "corrupt.png", "notes.txt", "truncated.jpg", "broken.mp4", "empty-folder",
           "nothing-*.png"]
    code, out, err = run([good, *(tmp_path / name for name in bad), "-o", tmp_path / "out"], tiny, capsys)
    assert code == 1
    assert "1 ok, 0 skipped, 8 failed" in out
    error_lines = [line for line in err.splitlines() if "error:" in line]
    for name in bad:
        assert sum(name in line for line in error_lines) == 1, (name, err)
    assert "Traceback" not in err
    assert (tmp_path / "out" / "good_color.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_color.png"]


@pytest.mark.parametrize("problem", ["missing", "garbage", "bad-provider", "no-inputs"])
def test_usage_model_and_provider_errors_exit_2(tmp_path, capsys, problem):
    cv2.imwrite(str(tmp_path / "a.png"), picture())
    tiny = make_tiny_colorizer(tmp_path / "tiny.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    argv = {
        "missing": [tmp_path / "a.png", "--model", tmp_path / "nope.onnx"],
        "garbage": [tmp_path / "a.png", "--model", tmp_path / "garbage.onnx"],
        "bad-provider": [tmp_path / "a.png", "--model", tiny, "--provider", "quantum"],
        "no-inputs": ["--model", tiny],
    }[problem]
    try:
        code = main([*map(str, argv), "-o", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def make_video(path, fourcc, frames=9, size=(64, 48), fps=12.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.roll(picture(size[1], size[0], seed=i), 3 * i, axis=1))
    writer.release()


def video_facts(path):
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return fps, frames


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".mov", "mp4v")])
def test_video_round_trip(tmp_path, tiny, capsys, suffix, fourcc):
    source = tmp_path / f"clip{suffix}"
    make_video(source, fourcc)
    code, out, err = run([source, "-o", tmp_path / "out"], tiny, capsys)
    assert code == 0, err
    in_fps, in_frames = video_facts(source)
    out_fps, out_frames = video_facts(tmp_path / "out" / "clip_color.mp4")
    assert len(out_frames) == len(in_frames) == 9
    assert out_fps == pytest.approx(in_fps, abs=0.01)
    assert out_frames[0].shape == in_frames[0].shape == (48, 64, 3)
    # lossy codecs twice over: compare L loosely, but it must follow the input frame by frame
    for got, source_frame in zip(out_frames, in_frames):
        difference = np.abs(color.lightness(got) - color.lightness(source_frame))
        assert np.median(difference) < 3


@pytest.mark.slow
def test_huge_image_stays_within_memory(tmp_path):
    """20000 x 20000 (1.2 GB of pixels): the merge runs in strips, in place, so the peak is OpenCV's own decode
    (about twice the pixels) rather than the several float32 copies a plain whole-image merge would need (~10 GB)."""
    side = 20000
    image = np.empty((side, side, 3), np.uint8)
    ramp = (np.arange(side) * 255 // side).astype(np.uint8)
    for y0 in range(0, side, 1000):
        image[y0:y0 + 1000, :, 0], image[y0:y0 + 1000, :, 1], image[y0:y0 + 1000, :, 2] = ramp, y0 * 255 // side, 99
    cv2.imwrite(str(tmp_path / "huge.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del image
    tiny = make_tiny_colorizer(tmp_path / "tiny.onnx")
    script = ("import resource, sys; from runtime.colorize import main; code = main(sys.argv[1:]); "
              "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, "huge.jpg", "--model", str(tiny), "--provider", "cpu"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    peak_bytes = int(result.stdout.split("peak")[-1]) * 1024
    assert peak_bytes < 2.5 * side * side * 3
    preview = cv2.imread(str(tmp_path / "colorized" / "huge_color.jpg"), cv2.IMREAD_REDUCED_COLOR_8)
    assert preview.shape == (side // 8, side // 8, 3)


def test_child_decoder_gives_opencvs_frames(tmp_path):
    """Videos are decoded in a child process: the frames, fps and frame count are OpenCV's own."""
    from runtime.decoder import VideoDecoder

    path = tmp_path / "clip.avi"
    make_video(path, "MJPG")
    capture = cv2.VideoCapture(str(path))
    expected = []
    while (frame := capture.read()[1]) is not None:
        expected.append(frame)
    with VideoDecoder(path) as decoder:
        assert (decoder.fps, decoder.declared) == (12.0, 9)
        frames = list(decoder.frames())
    assert len(frames) == len(expected) == 9
    for got, want in zip(frames, expected):
        np.testing.assert_array_equal(got, want)


def test_without_output_marks_a_color_file_in_place_is_never_replaced(tmp_path, tiny, capsys, monkeypatch):
    """Where the file system keeps no extended attributes (simulated: fileio.is_ours says it cannot tell), a
    `*_color.*` file in the output folder is skipped as an earlier output by its name, and so never replaced: it may
    be the user's own."""
    monkeypatch.setattr("runtime.fileio.is_ours", lambda path: None)
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("x.jpg", picture())
    cv2.imwrite("x_color.jpg", picture(seed=1))
    before = Path("x_color.jpg").read_bytes()
    code, out, err = run([".", "-o", ".", "--overwrite"], tiny, capsys)
    assert code == 1 and "0 ok, 0 skipped, 1 failed" in out
    assert "output x_color.jpg would replace a file this run found among its inputs" in err
    code, out, err = run([".", "-o", "."], tiny, capsys)
    assert code == 0 and "0 ok, 1 skipped" in out
    assert Path("x_color.jpg").read_bytes() == before and sorted(os.listdir()) == ["tiny.onnx", "x.jpg", "x_color.jpg"]
