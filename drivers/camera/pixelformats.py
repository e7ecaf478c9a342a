"""Camera pixel formats → numpy images, one table row per format.

Every decoder takes the raw payload as a flat ``uint8`` array plus the image
width and height in pixels and returns a new array that owns its memory (the
driver gives the vendor buffer back right after), so decoding *is* the one
copy a frame makes on its way to the event loop.

What comes out:

- ``Mono8`` → ``(H, W) uint8``.
- ``Mono10``/``Mono12``/``Mono14``/``Mono16`` (one pixel per little-endian 16-bit
  word) and the packed 10/12-bit formats → ``(H, W) uint16`` holding the
  pixel's own value (not scaled to 16 bits); the output format is the
  unpacked name (``Mono12Packed`` → ``Mono12``).
- ``RGB8``, ``BGR8``, ``RGBa8``/``BGRa8`` and the four 8-bit Bayer layouts →
  ``(H, W, 3) uint8`` in ``RGB8`` order. Bayer is demosaiced bilinearly.

Packed 10/12-bit mono formats come in two families whose byte layouts differ
although the names look alike:

- GigE Vision 1.x ``Mono10Packed`` / ``Mono12Packed`` (PFNC codes 0x010C0004 /
  0x010C0006): two pixels in three bytes; bytes 0 and 2 carry the *high*
  bits of pixel 0 and pixel 1, the middle byte carries both pixels' low bits
  (``Mono12Packed``: pixel 0 in bits 3..0, pixel 1 in bits 7..4;
  ``Mono10Packed``: pixel 0 in bits 1..0, pixel 1 in bits 5..4).
- PFNC ``Mono10p`` / ``Mono12p`` (0x010A0046 / 0x010C0047): pixels are laid
  end to end as a little-endian bit stream, LSB first (``Mono12p``: 2 pixels
  in 3 bytes; ``Mono10p``: 4 pixels in 5 bytes).

Adding a format is one ``_register(...)`` call with its name, PFNC code and
decoder. Unknown formats raise ``PixelFormatError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.errors import PixelFormatError

Raw = npt.NDArray[np.uint8]
Image = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
Decoder = Callable[[Raw, int, int], Image]


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """One row of the table: how to turn a payload of this format into pixels.

    ``bits_per_pixel`` is the size on the wire (12 for ``Mono12Packed``, 16 for
    ``Mono12``); ``output`` is the GenICam name of the decoded image's format.
    """

    name: str
    pfnc: int
    bits_per_pixel: int
    output: str
    decode: Decoder
    aliases: tuple[str, ...] = ()

    def payload_bytes(self, width: int, height: int) -> int:
        """Bytes one ``width`` x ``height`` image of this format occupies (rounded up)."""
        return (width * height * self.bits_per_pixel + 7) // 8


_BY_NAME: dict[str, PixelFormat] = {}
_BY_CODE: dict[int, PixelFormat] = {}


def _register(fmt: PixelFormat) -> None:
    for key in (fmt.name, *fmt.aliases):
        _BY_NAME[key.lower()] = fmt
    _BY_CODE[fmt.pfnc] = fmt


def lookup(pixel_format: str | int) -> PixelFormat:
    """The table row for a GenICam name (case-insensitive) or a 32-bit PFNC code.

    Raises ``PixelFormatError`` when the format is not in the table.
    """
    fmt = (
        _BY_CODE.get(pixel_format)
        if isinstance(pixel_format, int)
        else _BY_NAME.get(pixel_format.lower())
    )
    if fmt is None:
        shown = f"0x{pixel_format:08X}" if isinstance(pixel_format, int) else repr(pixel_format)
        raise PixelFormatError(
            f"pixel format {shown} is not supported; supported: {', '.join(supported())}"
        )
    return fmt


def supported() -> list[str]:
    """Names of every format the table can decode."""
    return sorted({f.name for f in _BY_CODE.values()})


def decode(
    data: bytes | bytearray | memoryview | Raw, pixel_format: str | int, width: int, height: int
) -> tuple[Image, str]:
    """Decode one payload; returns ``(pixels, output_format_name)``.

    ``data`` may be longer than the image (trailing padding or chunk data is
    ignored). Raises ``PixelFormatError`` for an unknown format, non-positive
    dimensions, or a payload too short for ``width`` x ``height``.
    """
    fmt = lookup(pixel_format)
    if width <= 0 or height <= 0:
        raise PixelFormatError(f"{fmt.name}: image size {width}x{height} is not positive")
    raw = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    need = fmt.payload_bytes(width, height)
    if raw.size < need:
        raise PixelFormatError(
            f"{fmt.name}: payload has {raw.size} bytes, a {width}x{height} image needs {need}"
        )
    return fmt.decode(raw, width, height), fmt.output


# -- decoders -------------------------------------------------------------------
def _mono8(raw: Raw, w: int, h: int) -> Image:
    return raw[: w * h].reshape(h, w).copy()


def _mono16le(raw: Raw, w: int, h: int) -> Image:
    words = raw[: 2 * w * h].view("<u2").reshape(h, w)
    return words.astype(np.uint16)  # astype copies and fixes the byte order on big-endian hosts


def _groups(raw: Raw, n_pixels: int, pixels_per_group: int, bytes_per_group: int) -> Raw:
    """The payload as ``(n_groups, bytes_per_group)``, zero-padding a partial last group."""
    n_groups = -(-n_pixels // pixels_per_group)
    used = raw[: (n_pixels * bytes_per_group * 8 // pixels_per_group + 7) // 8]
    padded = np.zeros(n_groups * bytes_per_group, dtype=np.uint8)
    padded[: used.size] = used
    return padded.reshape(n_groups, bytes_per_group)


def _gev_packed(bits: int) -> Decoder:
    """GigE Vision ``MonoNPacked``: [p0 high][p1 low | p0 low][p1 high]."""
    low = bits - 8
    mask = (1 << low) - 1
    p1_shift = 4  # both layouts put pixel 1's low bits at bit 4 of the middle byte

    def decode_(raw: Raw, w: int, h: int) -> Image:
        g = _groups(raw, w * h, 2, 3).astype(np.uint16)
        p0 = (g[:, 0] << low) | (g[:, 1] & mask)
        p1 = (g[:, 2] << low) | ((g[:, 1] >> p1_shift) & mask)
        return np.stack([p0, p1], axis=1).reshape(-1)[: w * h].reshape(h, w)

    return decode_


def _pfnc_lsb_packed(bits: int, pixels_per_group: int, bytes_per_group: int) -> Decoder:
    """PFNC ``MonoNp``: pixels laid end to end as a little-endian bit stream."""
    mask = np.uint64((1 << bits) - 1)
    byte_shifts = (np.arange(bytes_per_group, dtype=np.uint64) * np.uint64(8))[None, :]
    pixel_shifts = (np.arange(pixels_per_group, dtype=np.uint64) * np.uint64(bits))[None, :]

    def decode_(raw: Raw, w: int, h: int) -> Image:
        g = _groups(raw, w * h, pixels_per_group, bytes_per_group).astype(np.uint64)
        word = np.bitwise_or.reduce(g << byte_shifts, axis=1)[:, None]
        pixels: npt.NDArray[np.uint16] = ((word >> pixel_shifts) & mask).astype(np.uint16)
        return pixels.reshape(-1)[: w * h].reshape(h, w)

    return decode_


def _rgb_order(channels: int, order: tuple[int, int, int]) -> Decoder:
    def decode_(raw: Raw, w: int, h: int) -> Image:
        px = raw[: w * h * channels].reshape(h, w, channels)
        return np.ascontiguousarray(px[:, :, list(order)])

    return decode_


# Weights of the bilinear demosaic: each output channel is the normalized
# convolution of that channel's samples, so sample sites keep their exact value
# and borders average only the neighbours that exist.
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32)


def _conv3(img: npt.NDArray[np.float32], k: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    h, w = img.shape
    p = np.pad(img, 1)
    out = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy : dy + h, dx : dx + w]
    return out


def _bayer(pattern: str) -> Decoder:
    """``pattern`` names the colours of the top-left 2x2 tile, row by row (``"RGGB"``)."""
    sites = {c: [(i // 2, i % 2) for i, ch in enumerate(pattern) if ch == c] for c in "RGB"}

    def decode_(raw: Raw, w: int, h: int) -> Image:
        mosaic = raw[: w * h].reshape(h, w).astype(np.float32)
        out = np.empty((h, w, 3), dtype=np.uint8)
        for ch, colour in enumerate("RGB"):
            mask = np.zeros((h, w), dtype=np.float32)
            for y0, x0 in sites[colour]:
                mask[y0::2, x0::2] = 1.0
            k = _K_G if colour == "G" else _K_RB
            num = _conv3(mosaic * mask, k)
            den = _conv3(mask, k)
            out[:, :, ch] = np.clip(np.rint(num / np.maximum(den, 1e-6)), 0, 255).astype(np.uint8)
        return out

    return decode_


for _fmt in (
    PixelFormat("Mono8", 0x01080001, 8, "Mono8", _mono8),
    PixelFormat("Mono10", 0x01100003, 16, "Mono10", _mono16le),
    PixelFormat("Mono12", 0x01100005, 16, "Mono12", _mono16le),
    PixelFormat("Mono14", 0x01100025, 16, "Mono14", _mono16le),
    PixelFormat("Mono16", 0x01100007, 16, "Mono16", _mono16le),
    PixelFormat("Mono10Packed", 0x010C0004, 12, "Mono10", _gev_packed(10)),
    PixelFormat("Mono12Packed", 0x010C0006, 12, "Mono12", _gev_packed(12)),
    PixelFormat("Mono10p", 0x010A0046, 10, "Mono10", _pfnc_lsb_packed(10, 4, 5)),
    PixelFormat("Mono12p", 0x010C0047, 12, "Mono12", _pfnc_lsb_packed(12, 2, 3)),
    PixelFormat("RGB8", 0x02180014, 24, "RGB8", _rgb_order(3, (0, 1, 2)), ("RGB8Packed",)),
    PixelFormat("BGR8", 0x02180015, 24, "RGB8", _rgb_order(3, (2, 1, 0)), ("BGR8Packed",)),
    PixelFormat("RGBa8", 0x02200016, 32, "RGB8", _rgb_order(4, (0, 1, 2)), ("RGBA8Packed",)),
    PixelFormat("BGRa8", 0x02200017, 32, "RGB8", _rgb_order(4, (2, 1, 0)), ("BGRA8Packed",)),
    PixelFormat("BayerGR8", 0x01080008, 8, "RGB8", _bayer("GRBG")),
    PixelFormat("BayerRG8", 0x01080009, 8, "RGB8", _bayer("RGGB")),
    PixelFormat("BayerGB8", 0x0108000A, 8, "RGB8", _bayer("GBRG")),
    PixelFormat("BayerBG8", 0x0108000B, 8, "RGB8", _bayer("BGGR")),
):
    _register(_fmt)
