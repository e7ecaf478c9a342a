"""Pixel format decoders: known bytes in, known pixels out, one format at a time."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.camera import pixelformats as pf
from drivers.errors import PixelFormatError


def test_mono8_is_reshaped_row_major_and_owns_its_memory() -> None:
    """Mono8 bytes become an (H, W) uint8 image, rows first, copied out of the buffer."""
    raw = bytearray(range(6))
    img, fmt = pf.decode(raw, "Mono8", 3, 2)
    assert fmt == "Mono8" and img.dtype == np.uint8
    assert img.tolist() == [[0, 1, 2], [3, 4, 5]]
    raw[0] = 99
    assert img[0, 0] == 0


@pytest.mark.parametrize("name", ["Mono10", "Mono12", "Mono16"])
def test_unpacked_mono_is_little_endian_uint16(name: str) -> None:
    """Mono10/12/16 hold one pixel per little-endian 16-bit word, value unscaled."""
    raw = bytes([0xFF, 0x03, 0x34, 0x12, 0x00, 0x00, 0x01, 0x00])
    img, fmt = pf.decode(raw, name, 2, 2)
    assert fmt == name and img.dtype == np.uint16
    assert img.tolist() == [[0x03FF, 0x1234], [0, 1]]


def test_gige_vision_mono12packed_puts_high_bits_in_the_outer_bytes() -> None:
    """Mono12Packed (GEV): [p0 11..4][p1 3..0 | p0 3..0][p1 11..4]."""
    img, fmt = pf.decode(bytes([0xAB, 0xC1, 0xDE, 0x00, 0xF0, 0xFF]), "Mono12Packed", 2, 2)
    assert fmt == "Mono12" and img.dtype == np.uint16
    assert img.tolist() == [[0xAB1, 0xDEC], [0x000, 0xFFF]]


def test_pfnc_mono12p_is_an_lsb_first_bit_stream() -> None:
    """Mono12p (PFNC): the same three bytes decode differently: p0 = b0 | (b1 & 0xF) << 8."""
    img, fmt = pf.decode(bytes([0xAB, 0xC1, 0xDE]), "Mono12p", 2, 1)
    assert fmt == "Mono12"
    assert img.tolist() == [[0x1AB, 0xDEC]]


def test_gige_vision_mono10packed_keeps_low_bits_at_bits_1_0_and_5_4() -> None:
    """Mono10Packed (GEV): p0 = b0 << 2 | b1 & 3, p1 = b2 << 2 | (b1 >> 4) & 3."""
    img, fmt = pf.decode(bytes([0xFF, 0x21, 0x80]), "Mono10Packed", 2, 1)
    assert fmt == "Mono10"
    assert img.tolist() == [[0x3FD, 0x202]]


def test_pfnc_mono10p_packs_four_pixels_in_five_bytes() -> None:
    """Mono10p (PFNC): 4 pixels of 10 bits laid LSB first in 5 bytes."""
    pixels = [0x3FF, 0x001, 0x200, 0x155]
    word = sum(p << (10 * i) for i, p in enumerate(pixels))
    img, fmt = pf.decode(word.to_bytes(5, "little"), "Mono10p", 4, 1)
    assert fmt == "Mono10"
    assert img.tolist() == [pixels]


@pytest.mark.parametrize(("name", "bits"), [("Mono10p", 10), ("Mono12p", 12)])
def test_pfnc_packed_round_trip_with_odd_width(name: str, bits: int) -> None:
    """Random pixels packed LSB-first decode back exactly, including a partial last group."""
    rng = np.random.default_rng(3)
    w, h = 7, 3
    pixels = rng.integers(0, 1 << bits, size=w * h)
    stream = sum(int(p) << (bits * i) for i, p in enumerate(pixels))
    raw = stream.to_bytes((w * h * bits + 7) // 8, "little")
    img, _ = pf.decode(raw, name, w, h)
    assert img.reshape(-1).tolist() == pixels.tolist()


def test_rgb8_and_bgr8_both_come_out_in_rgb_order() -> None:
    """RGB8 keeps its channel order, BGR8 is swapped, RGBa8 drops alpha; all → RGB8."""
    rgb, fmt = pf.decode(bytes([10, 20, 30, 40, 50, 60]), "RGB8", 2, 1)
    assert fmt == "RGB8" and rgb.shape == (1, 2, 3)
    assert rgb.tolist() == [[[10, 20, 30], [40, 50, 60]]]
    bgr, fmt = pf.decode(bytes([30, 20, 10, 60, 50, 40]), "BGR8", 2, 1)
    assert fmt == "RGB8" and bgr.tolist() == rgb.tolist()
    rgba, _ = pf.decode(bytes([10, 20, 30, 255, 40, 50, 60, 0]), "RGBa8", 2, 1)
    assert rgba.tolist() == rgb.tolist()


BAYER = {"BayerRG8": "RGGB", "BayerGB8": "GBRG", "BayerGR8": "GRBG", "BayerBG8": "BGGR"}


def _mosaic(pattern: str, rgb: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    colour = dict(zip("RGB", rgb, strict=True))
    m = np.zeros((h, w), dtype=np.uint8)
    for i, c in enumerate(pattern):
        m[i // 2 :: 2, i % 2 :: 2] = colour[c]
    return m


@pytest.mark.parametrize("name", sorted(BAYER))
def test_bayer_flat_colour_is_recovered_everywhere(name: str) -> None:
    """A flat colour seen through the format's own mosaic demosaics to that colour, borders too."""
    raw = _mosaic(BAYER[name], (200, 100, 50), 6, 8)
    img, fmt = pf.decode(raw.tobytes(), name, 8, 6)
    assert fmt == "RGB8" and img.shape == (6, 8, 3)
    assert (img == np.array([200, 100, 50], dtype=np.uint8)).all()


@pytest.mark.parametrize("name", sorted(BAYER))
def test_bayer_phase_keeps_each_sample_at_its_site(name: str) -> None:
    """Each pixel keeps its own sample in its own channel: the table has the right phase."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, size=(4, 6), dtype=np.uint8)
    img, _ = pf.decode(raw.tobytes(), name, 6, 4)
    for i, colour in enumerate(BAYER[name]):
        ch = "RGB".index(colour)
        assert (img[i // 2 :: 2, i % 2 :: 2, ch] == raw[i // 2 :: 2, i % 2 :: 2]).all()


def test_bayer_interior_is_bilinear() -> None:
    """BayerRG8: green at a red site is the mean of 4 neighbours, blue the mean of 4 diagonals."""
    raw = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    img, _ = pf.decode(raw.tobytes(), "BayerRG8", 6, 6)
    y, x = 2, 2  # a red site (even row, even column) away from the border
    g = (int(raw[y - 1, x]) + int(raw[y + 1, x]) + int(raw[y, x - 1]) + int(raw[y, x + 1])) / 4
    b = (
        int(raw[y - 1, x - 1])
        + int(raw[y - 1, x + 1])
        + int(raw[y + 1, x - 1])
        + int(raw[y + 1, x + 1])
    ) / 4
    assert img[y, x].tolist() == [raw[y, x], round(g), round(b)]


def test_lookup_by_pfnc_code_and_aliases() -> None:
    """The table answers to PFNC codes, GigE Vision legacy names and any letter case."""
    assert pf.lookup(0x01080001).name == "Mono8"
    assert pf.lookup(0x010C0006).name == "Mono12Packed"
    assert pf.lookup("RGB8Packed").name == "RGB8"
    assert pf.lookup("bayerrg8").name == "BayerRG8"


def test_unknown_format_and_short_payload_are_clear_errors() -> None:
    """An unknown format names itself; a short payload says how many bytes were needed."""
    with pytest.raises(PixelFormatError, match="'YUV422_8' is not supported"):
        pf.decode(b"\x00" * 8, "YUV422_8", 2, 2)
    with pytest.raises(PixelFormatError, match="0x12345678"):
        pf.lookup(0x12345678)
    with pytest.raises(PixelFormatError, match="has 5 bytes, a 3x2 image needs 6"):
        pf.decode(b"\x00" * 5, "Mono8", 3, 2)
