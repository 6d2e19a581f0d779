"""Encoded images for requests."""

import io
import struct
import zlib

from PIL import Image


def png(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def encoded(fmt: str, width: int = 64, height: int = 48) -> bytes:
    """A small image in any format Pillow writes (BMP, TIFF, GIF, WEBP, ...)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 60)).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width: int, height: int) -> bytes:
    """A valid PNG of any size, written row by row: an 8192² one is ~200 KB of bytes and would take
    ~260 MB to decode, yet building it here costs only its compressed size (no image in memory)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + width * 3)  # filter byte 0, then RGB zeros
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def text_bomb_png(chunks: int = 200) -> bytes:
    """An 8×8 PNG of ~200 KB whose zTXt chunks inflate to 1 MB each (200 MB in all) when its header is read."""
    text = zlib.compress(bytes(1_000_000))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(1 + 8 * 3) * 8)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + b"".join(_png_chunk(b"zTXt", b"note%d\0\0" % i + text) for i in range(chunks))
            + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b""))
