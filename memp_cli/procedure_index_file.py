"""The procedure index's side file: an uncompressed .npz beside the store, mapped member by member, written streamed.

Members: `meta` (JSON: version, the store state it was built for, document frequencies, scope names, a save id),
`ids` (sorted memory ids), `key_of` (each row's key), `vectors` (one per distinct key), `blob` and `offsets` (each
row's entry as UTF-8, tab-separated), `keys` (the key texts, JSON), `key_rows` and `key_starts` (each key's rows),
`scope_of` (each row's scope, a position in the scope names) and `tids` (a hash of each row's trajectory id, so that
a change of status reuses the rows of memories still there as they were).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

INDEX_VERSION = "10"
# Files of these versions (7: before scopes; 8: read whole, before the mapped layout; 9: before trajectory hashes)
# lend their key texts and key vectors to the index built afresh from the store, so that its keys are not embedded
# again (minutes at 100k).
OLDER_VERSIONS = ("7", "8", "9")
# Bytes copied at a time when a member is streamed from a temporary file or a mapped array.
CHUNK = 1 << 22


def tid_hash(trajectory_id: str) -> int:
    """Return a 64-bit hash of a trajectory id (stable across processes, unlike hash())."""
    from _blake2 import blake2b  # hashlib's, without loading OpenSSL: a fresh recall that reads no rows pays nothing

    return int.from_bytes(blake2b(trajectory_id.encode(), digest_size=8).digest(), "little")


def mapped_npz(path: Path) -> dict[str, Any]:
    """Return the arrays of an uncompressed .npz as read-only views of one memory map (nothing read up front)."""
    import mmap

    import numpy as np

    arrays: dict[str, Any] = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("compressed member")
            f.seek(info.header_offset)
            local = f.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if fortran or dtype.hasobject:
                raise ValueError("unexpected array layout")
            count = int(np.prod(shape)) if shape else 1
            if f.tell() + count * dtype.itemsize > len(mapped):
                raise ValueError("truncated member")
            arrays[info.filename.removesuffix(".npy")] = np.frombuffer(
                mapped, dtype=dtype, count=count, offset=f.tell()).reshape(shape)
    return arrays


def release(array: Any, start: int, stop: int) -> None:
    """Drop the pages of a mapped array's bytes start..stop from this process's resident set (they stay in the page
    cache): copying a whole index out of its map would otherwise hold the old file resident as it is read."""
    import mmap

    import numpy as np

    owner = array
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    if owner is None or not hasattr(owner, "madvise"):
        return
    at = array.ctypes.data + start - np.frombuffer(owner, dtype=np.uint8, count=1).ctypes.data
    first = at - at % mmap.PAGESIZE
    if stop > start:
        owner.madvise(mmap.MADV_DONTNEED, first, at + stop - start - first)


# A member: its name, and either an array or (dtype, shape, an open file holding its bytes from offset 0).
Member = tuple[str, Any]


def write_npz(out: IO[bytes], members: Iterable[Member]) -> None:
    """Write the members as an uncompressed .npz, each streamed in chunks (nothing is held whole in memory)."""
    import numpy as np

    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, source in members:
            if isinstance(source, tuple):
                dtype, shape, raw = source
            else:
                array = np.ascontiguousarray(source)
                dtype, shape, raw = array.dtype, array.shape, None
            with archive.open(_aligned(archive, f"{name}.npy"), "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                          "shape": tuple(shape)}
                np.lib.format.write_array_header_1_0(member, header)
                if raw is None:
                    flat = array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, dtype=np.uint8)
                    for start in range(0, len(flat), CHUNK):
                        member.write(flat[start : start + CHUNK].tobytes())
                else:
                    raw.seek(0)
                    shutil.copyfileobj(raw, member, CHUNK)


def write_index(path: Path, meta: dict[str, Any], arrays: dict[str, Any], keys: list[str]) -> None:
    """Write an index file at `path`, readable by its owner only (it holds task words, as the store does).

    `arrays` holds every member but meta and keys: arrays, or (dtype, shape, file) for members streamed from a file.
    """
    import numpy as np

    order = ("ids", "key_of", "vectors", "blob", "offsets", "key_rows", "key_starts", "scope_of", "tids")
    with open_private(path) as out:
        write_npz(out, [("meta", np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)),
                        ("keys", np.frombuffer(json.dumps(keys).encode(), dtype=np.uint8)),
                        *((name, arrays[name]) for name in order)])


# Each member's data starts on a multiple of ALIGN bytes in the file (its .npy header pads itself to 64): numpy reads
# an unaligned mapped array by copying it whole, so a lookup by bisection in 1M ids would copy 8 MB each time.
ALIGN = 64
PADDING_ID = 0x6D70  # an extra field of the zip local header that readers skip; ours, "mp"


def _aligned(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """Return the member's header, padded so that its data starts at a multiple of ALIGN in the file."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    assert archive.fp is not None
    # The local header: 30 bytes, the name, the extra fields (ours, then the 20-byte zip64 one zipfile adds).
    start = archive.fp.tell() + 30 + len(name.encode()) + 20 + 4
    info.extra = struct.pack("<HH", PADDING_ID, -start % ALIGN) + bytes(-start % ALIGN)
    return info


def open_private(path: Path) -> IO[bytes]:
    """Return `path` opened for writing, created readable by its owner only (it holds task words, as the store does)."""
    return os.fdopen(os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "wb")


def read_meta(data: dict[str, Any]) -> dict[str, Any]:
    """Return a mapped file's meta member, decoded."""
    meta: dict[str, Any] = json.loads(data["meta"].tobytes())
    return meta


def saved_key_texts(path: Path, save: str) -> list[str] | None:
    """Return the key texts of the file at `path` when it is still the save `save`, else None."""
    import numpy as np

    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            # Files saved before save ids carry none: the caller's length check is what they get.
            if meta.get("save", "") != save:
                return None
            texts: list[str] = json.loads(data["keys"].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    return texts


def index_path(store: Store) -> Path:
    """Return the side file beside the store that keeps its procedure index (derived, rebuilt from the store)."""
    if "://" in str(store.path):
        # A database has no folder beside it: this machine's cache, named by its URL and schema. Its state (the
        # store's id and generation counter, see store/pg/migrations.py) says when the store changed.
        import hashlib

        from .embed import cache_dir

        name = hashlib.blake2b(str(store.path).encode(), digest_size=12).hexdigest()
        folder = cache_dir() / "procedures"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            pass  # saving fails quietly then, and only costs the next process the rebuild
        return folder / f"{name}-procedures.npz"
    path = Path(store.path)
    return path.with_name(path.name + "-procedures.npz")
