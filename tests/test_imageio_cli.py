"""Image I/O and the `expertir restore` command on a corpus of awkward and broken inputs."""

import io

import numpy as np
import pytest
from PIL import Image

from expertir.cli.main import main
from expertir.errors import ImageReadError
from expertir.imageio import read_image, write_image
from expertir.inference.memory import can_measure

from conftest import smooth_image


def _u8(img):
    return (img * 255).round().astype(np.uint8)


@pytest.fixture
def corpus(tmp_path):
    """Every awkward input the restore command must survive; name -> (path, should_succeed)."""
    d = tmp_path / "in"
    d.mkdir()
    rgb = _u8(smooth_image(24, 40))
    files = {}
    (d / "empty.png").write_bytes(b"")
    files["empty"] = (d / "empty.png", False)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["truncated"] = (d / "truncated.png", False)
    (d / "text.png").write_text("this is not an image\n")
    files["text"] = (d / "text.png", False)
    Image.fromarray((smooth_image(24, 40)[..., 0] * 65535).astype(np.uint16)).save(d / "gray16.png")
    files["gray16"] = (d / "gray16.png", True)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    files["cmyk"] = (d / "cmyk.jpg", True)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    files["palette"] = (d / "palette.png", True)
    rgba = np.dstack([rgb, np.linspace(0, 255, 40, dtype=np.uint8)[None].repeat(24, 0)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    files["rgba"] = (d / "rgba.png", True)
    Image.fromarray(rgb[:1, :1]).save(d / "one.png")
    files["one"] = (d / "one.png", True)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("nothing here")
    return tmp_path, files


def test_restore_corpus_reports_each_bad_file_in_one_line(corpus, capsys):
    root, files = corpus
    out = root / "out"
    code = main(["restore", str(root / "in"), str(root / "no_images"), "-o", str(out),
                 "--model", "restormer_tiny", "--untrained", "--device", "cpu"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1
    assert "Traceback" not in text
    for name, (path, ok) in files.items():
        written = out / "in" / path.name
        assert written.exists() == ok, name
        if not ok:
            lines = [ln for ln in text.splitlines() if path.name in ln and "error" in ln]
            assert lines, f"no one-line error for {name}"
    assert "no_images: folder contains no images" in text
    assert f"restored {sum(ok for _, ok in files.values())} of {len(files)}" in text
    # outputs keep the input's nature
    assert Image.open(out / "in" / "gray16.png").mode == "I;16"
    assert Image.open(out / "in" / "rgba.png").mode == "RGBA"
    assert np.array_equal(np.asarray(Image.open(out / "in" / "rgba.png"))[..., 3],
                          np.asarray(Image.open(files["rgba"][0]))[..., 3])
    assert Image.open(out / "in" / "cmyk.jpg").mode == "CMYK"
    assert Image.open(out / "in" / "one.png").size == (1, 1)


def test_restore_never_overwrites_its_input(tmp_path, capsys):
    Image.fromarray(_u8(smooth_image(16, 16))).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code = main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path),
                 "--model", "restormer_tiny", "--untrained"])
    assert code == 1 and (tmp_path / "a.png").read_bytes() == before
    assert "would overwrite an input" in capsys.readouterr().out


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "x.safetensors")]) == 1
    assert main(["restore", "missing.png", "-o", str(tmp_path / "o"), "--model", "nope"]) == 1
    Image.fromarray(_u8(smooth_image(8, 8))).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", "nope"]) == 2
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                 "--weights", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "no such checkpoint file" in err and "Traceback" not in err


def test_sixteen_bit_colour_and_exif_orientation(tmp_path):
    import cv2

    img16 = (smooth_image(20, 30) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), img16[..., ::-1])
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.bit_depth == 16
    np.testing.assert_allclose(loaded.rgb, img16 / 65535, atol=1e-6)
    write_image(tmp_path / "o16.png", loaded.rgb, like=loaded)
    assert np.array_equal(cv2.imread(str(tmp_path / "o16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1], img16)

    im = Image.fromarray(_u8(smooth_image(10, 20)))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").rgb.shape == (20, 10, 3)


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"\x89PNG\r\n\x1a\n" + bytes(40), "cannot decode|not a recognised"),
                                            (b"plain text", "not a recognised image")])
def test_read_errors_name_the_file_and_the_problem(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as exc:
        read_image(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def png_header_only(width: int, height: int) -> bytes:
    """A 100-byte PNG that claims ``width`` × ``height`` pixels (one row of data)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(width + 1))) + chunk(b"IEND", b""))


def test_decompression_bombs_and_pixel_limits_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # 400 megapixels in 100 bytes
    with pytest.raises(ImageReadError, match="decompression bomb") as exc:
        read_image(bomb)
    assert str(bomb) in str(exc.value) and "\n" not in str(exc.value)
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(9000, 9000))
    with pytest.raises(ImageReadError, match=r"9000×9000 \(81.0 MP\) is over the limit of 50.0 MP"):
        read_image(big, max_pixels=50_000_000)
    small = tmp_path / "small.png"
    Image.fromarray(_u8(smooth_image(8, 12))).save(small)
    assert read_image(small, max_pixels=96).rgb.shape == (8, 12, 3)
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(small, max_pixels=95)


def test_help_texts(capsys):
    for argv in (["--help"], ["restore", "--help"], ["models", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "tile" in capsys.readouterr().out


def _photo(path, size=(40, 24), orientation=6, subsampling=0):
    """A JPEG with an sRGB ICC profile and EXIF (camera make, date in the Exif IFD, and an
    orientation tag); the left quarter of the stored pixels is red."""
    from PIL import ImageCms

    pixels = _u8(smooth_image(size[1], size[0]) * 0.5)
    pixels[:, : size[0] // 4] = (255, 0, 0)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "ExpertCam"
    exif.get_ifd(0x8769)[0x9003] = "2026:11:23 10:00:00"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(path, exif=exif, icc_profile=icc, subsampling=subsampling, quality=90)
    return icc


def test_photo_keeps_icc_exif_and_is_rotated_once(tmp_path, capsys):
    from PIL import ImageOps, JpegImagePlugin

    icc = _photo(tmp_path / "photo.jpg")
    loaded = read_image(tmp_path / "photo.jpg")
    assert loaded.rgb.shape == (40, 24, 3)  # orientation 6 applied on reading
    assert loaded.rgb[0, :, 0].mean() > 0.9 and loaded.rgb[-1, :, 0].mean() < 0.7  # red now on top
    assert main(["restore", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"),
                 "--model", "restormer_tiny", "--untrained", "--device", "cpu"]) == 0
    with Image.open(tmp_path / "out" / "photo.jpg") as out:
        assert out.size == (24, 40)  # stored upright ...
        exif = out.getexif()
        assert exif.get(0x0112, 1) == 1  # ... with no orientation left to apply again
        assert ImageOps.exif_transpose(out).size == (24, 40)
        assert exif[0x010F] == "ExpertCam" and exif.get_ifd(0x8769)[0x9003] == "2026:11:23 10:00:00"
        assert out.info["icc_profile"] == icc
        assert JpegImagePlugin.get_sampling(out) == 0  # the input's 4:4:4
        reference = tmp_path / "q95.jpg"
        Image.new("RGB", (8, 8)).save(reference, quality=95, subsampling=0)
        with Image.open(reference) as ref:
            assert out.quantization == ref.quantization  # quality 95
    assert "whole image" in capsys.readouterr().out


def test_jpeg_subsampling_follows_the_input(tmp_path):
    from PIL import JpegImagePlugin

    _photo(tmp_path / "sub.jpg", orientation=1, subsampling=1)
    loaded = read_image(tmp_path / "sub.jpg")
    assert loaded.jpeg_subsampling == 1 and loaded.rgb.shape == (24, 40, 3)
    write_image(tmp_path / "o.jpg", loaded.rgb, like=loaded)
    with Image.open(tmp_path / "o.jpg") as out:
        assert JpegImagePlugin.get_sampling(out) == 1 and out.getexif()[0x010F] == "ExpertCam"


def test_sixteen_bit_png_and_png_keep_icc_and_exif(tmp_path):
    import cv2

    icc = _photo(tmp_path / "p.jpg", orientation=1)
    loaded = read_image(tmp_path / "p.jpg")
    write_image(tmp_path / "p8.png", loaded.rgb, like=loaded)
    loaded.bit_depth = 16
    write_image(tmp_path / "p16.png", loaded.rgb, like=loaded)
    for name in ("p8.png", "p16.png"):
        with Image.open(tmp_path / name) as out:
            out.load()
            assert out.info["icc_profile"] == icc and out.getexif()[0x010F] == "ExpertCam", name
    assert cv2.imread(str(tmp_path / "p16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_a_failed_write_leaves_no_file(tmp_path):
    loaded = read_image(_write_png(tmp_path / "a.png"))
    with pytest.raises(Exception):
        write_image(tmp_path / "out" / "wide.jpg", np.zeros((1, 70000, 3), np.float32), like=loaded)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor a temporary


def _write_png(path, h=16, w=16):
    Image.fromarray(_u8(smooth_image(h, w))).save(path)
    return path


@pytest.mark.skipif(not can_measure("cpu"), reason="peak memory cannot be measured on this system")
def test_restore_says_per_image_what_it_chose(tmp_path, capsys):
    import torch

    from expertir.inference import plan_restore
    from expertir.models import build_model

    small, big = _write_png(tmp_path / "small.png"), _write_png(tmp_path / "big.png", 128, 192)
    args = ["-o", str(tmp_path / "out"), "--model", "restormer_tiny", "--untrained", "--device", "cpu"]
    assert main(["restore", str(small), str(big), *args]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ": whole image" in ln or ": tiled" in ln]
    assert len(lines) == 2 and all("whole image" in ln for ln in lines)
    whole = plan_restore(build_model("restormer_tiny"), 128, 192, torch.device("cpu"), tile=None).need
    assert main(["restore", str(big), *args, "--max-memory", str(whole // 2)]) == 0
    assert "big.png (192×128): tiled " in capsys.readouterr().out
    assert main(["restore", str(big), *args, "--max-memory", "1MB", "--tile", "0"]) == 0
    assert "big.png (192×128): whole image" in capsys.readouterr().out
    assert main(["restore", str(big), *args, "--tile", "128"]) == 0
    assert "tiled 2 × 128 px" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "big.png").size == (192, 128)
    assert main(["restore", str(big), *args, "--tile", "128", "--self-ensemble", "8"]) == 0
    assert "tiled 2 × 128 px" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "big.png").size == (192, 128)
    for bad in (["--max-memory", "lots"], ["--tile", "-2"], ["--tile", "big"], ["--self-ensemble", "3"]):
        with pytest.raises(SystemExit) as exc:
            main(["restore", str(big), *args, *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cannot read memory size 'lots'" in err and "Traceback" not in err
    assert main(["restore", str(big), *args, "--max-memory", "1MB"]) == 1
    out = capsys.readouterr().out
    assert "big.png: a 192×128 image needs at least" in out and "Traceback" not in out
