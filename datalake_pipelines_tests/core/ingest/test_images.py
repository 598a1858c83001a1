"""Image inspection policy: JPEG structural check, full decode, decompression-bomb limit."""

import io

import pytest
from PIL import Image

from datalake_pipelines.core.ingest.images import ImageRejected, inspect_image, jpeg_structure_problem


@pytest.fixture(params=["flower.jpg", "xmp_test.jpg", "exif_gps.jpg", "sugarshack_bad_mpo_header.jpg"])
def jpeg_bytes(request, corpus_dir):
    return (corpus_dir / "valid" / request.param).read_bytes()


@pytest.mark.parametrize("keep", [0.99, 0.75, 0.5, 0.1])
def test_truncated_jpeg_is_rejected_without_decoding(jpeg_bytes, keep):
    truncated = jpeg_bytes[: int(len(jpeg_bytes) * keep)]
    with pytest.raises(ImageRejected, match="truncated"):
        inspect_image(truncated)
    with pytest.raises(ImageRejected):
        inspect_image(truncated, full_decode=True)


def test_complete_jpeg_with_trailing_bytes_is_accepted(jpeg_bytes):
    assert jpeg_structure_problem(jpeg_bytes) is None
    info = inspect_image(jpeg_bytes + b"camera trailer")
    assert info.format in ("JPEG", "MPO") and info.width > 0


def test_end_marker_inside_exif_thumbnail_does_not_hide_truncation():
    thumb = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(thumb, "JPEG")
    exif = Image.Exif()
    main = io.BytesIO()
    Image.new("RGB", (64, 48), "blue").save(main, "JPEG", exif=exif.tobytes())
    data = main.getvalue()
    # Put a complete JPEG (with its own FFD9) inside an APP segment, then truncate the main scan.
    payload = thumb.getvalue()
    app = b"\xff\xe2" + (len(payload) + 2).to_bytes(2, "big") + payload
    crafted = data[:2] + app + data[2:]
    assert jpeg_structure_problem(crafted) is None
    sos = crafted.rfind(b"\xff\xda")
    assert jpeg_structure_problem(crafted[: sos + 40]) is not None


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    image = io.BytesIO()
    Image.new("L", (3000, 3000)).save(image, "PNG")
    with pytest.raises(ImageRejected, match="decompression bomb"):
        inspect_image(image.getvalue(), max_pixels=1_000_000)
    assert inspect_image(image.getvalue()).width == 3000
