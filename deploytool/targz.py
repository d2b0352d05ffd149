"""A byte-for-byte reproducible .tar.gz writer (what CodeDeploy calls bundleType tgz).

Contract: the bytes written depend only on the entries added (in the order added) and the
compression level, never on the clock, the user, the umask or the file system:
- tar: POSIX pax format (plain ustar headers unless a name needs pax), mtime fixed at
  NORMALISED_MTIME, uid/gid 0, owner root/root, modes 0755 for directories and executables and 0644
  for other files, symlinks kept as symlinks; two zero blocks and padding to a 10240-byte record;
- gzip: one standard member with no file name and mtime 0, deflated by ISA-L (python-isal) at level
  1-3, in a background thread so reading and hashing the files overlaps with compressing them.
Every file's sha256 is computed while it is read (one read per file), and the archive's sha256 and size
while it is written. The caller owns the output file.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import tarfile
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from isal import isal_zlib

from deploytool.errors import BundleError

NORMALISED_MTIME = 946684800  # 2000-01-01T00:00:00Z: old enough to be obviously fixed, not 0
DEFAULT_LEVEL = 2  # ISA-L's levels run 0-3; 2 compresses text about as well as gzip -6, far faster
CHUNK = 1 << 20  # bytes handed to the compressor at a time
RECORD = tarfile.RECORDSIZE
# gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown" (as Python's gzip).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _Deflater:
    """Raw deflate + crc32 + sha256 of the output, on a worker thread fed through a bounded queue."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self.crc = 0
        self.length = 0
        self.size = 0
        self.sha = hashlib.sha256()
        self._emit(_GZIP_HEADER)
        self._thread = threading.Thread(target=self._run, name="deploytool-deflate", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.sha.update(data)
            self.size += len(data)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so the producer never blocks on a full queue
            try:
                self.crc = isal_zlib.crc32(chunk, self.crc)
                self.length += len(chunk)
                self._emit(self._compressor.compress(chunk))
            except BaseException as exc:  # reported by finish()
                self._error = exc

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._failed()
        self._queue.put(chunk)

    def _failed(self) -> BundleError:
        return BundleError(f"writing the bundle failed: {self._error}")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> None:
        self.stop()
        if self._error is not None:
            raise self._failed() from self._error
        self._emit(self._compressor.flush())
        self._emit(struct.pack("<II", self.crc, self.length & 0xFFFFFFFF))


class ReproducibleTarGz:
    """Add entries in the order they should appear; `close()` returns (size, sha256) of the .tgz."""

    def __init__(self, out: BinaryIO, *, level: int = DEFAULT_LEVEL) -> None:
        self._deflater = _Deflater(out, level)
        self._buffer = bytearray()
        self._offset = 0  # tar bytes produced so far
        self._closed = False

    def __enter__(self) -> ReproducibleTarGz:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self._deflater.stop()

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._offset += len(data)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._deflater.feed(bytes(self._buffer))
            self._buffer.clear()

    def _header(self, arcname: str, kind: bytes, *, size: int = 0, mode: int = 0o644, target: str = "") -> None:
        info = tarfile.TarInfo(arcname)
        info.type, info.size, info.mode, info.linkname = kind, size, mode, target
        info.mtime, info.uid, info.gid, info.uname, info.gname = NORMALISED_MTIME, 0, 0, "root", "root"
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, arcname: str) -> None:
        self._header(arcname, tarfile.DIRTYPE, mode=0o755)

    def add_symlink(self, arcname: str, target: str) -> None:
        self._header(arcname, tarfile.SYMTYPE, mode=0o777, target=target)

    def add_bytes(self, arcname: str, data: bytes, *, executable: bool = False) -> str:
        """Add a file held in memory; returns its sha256."""
        self._header(arcname, tarfile.REGTYPE, size=len(data), mode=0o755 if executable else 0o644)
        self._write(data)
        self._pad(len(data))
        return hashlib.sha256(data).hexdigest()

    def add_file(self, arcname: str, path: Path, *, executable: bool = False) -> str:
        """Add a file from disk, reading it once; returns the sha256 of what was archived."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            self._header(arcname, tarfile.REGTYPE, size=size, mode=0o755 if executable else 0o644)
            digest = hashlib.sha256()
            left = size
            while left:
                chunk = os.read(fd, min(left, CHUNK))
                if not chunk:
                    raise BundleError(f"{path} shrank while it was being bundled: build again")
                digest.update(chunk)
                if len(chunk) >= CHUNK and not self._buffer:
                    self._offset += len(chunk)
                    self._deflater.feed(chunk)  # a big read goes to the compressor as it is
                else:
                    self._write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        self._pad(size)
        return digest.hexdigest()

    def close(self) -> tuple[int, str]:
        if self._closed:
            raise BundleError("the bundle is already closed")
        self._closed = True
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._write(bytes(-self._offset % RECORD))
        if self._buffer:
            self._deflater.feed(bytes(self._buffer))
            self._buffer.clear()
        self._deflater.finish()
        return self._deflater.size, self._deflater.sha.hexdigest()
