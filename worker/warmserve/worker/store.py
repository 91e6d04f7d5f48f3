"""The node-local model store: checkpoints on disk, their integrity, and loading them into pool slots.

A model is a directory under the store's root holding ``config.json`` and one or more ``*.safetensors``
files (tokenizer files may sit beside them); an optional ``SHA256SUMS`` manifest (``sha256sum`` format)
lists checksums. The store never trusts a file:

- :meth:`ModelStore.inspect` parses every safetensors header (8-byte little-endian length, then a JSON
  object) and checks dtypes, shapes, offsets and file sizes, then places the tensors in a slot
  (a :class:`~warmserve.worker.layout.WeightLayout`, aligned offsets, in file order so loads read
  sequentially). Anything wrong raises :class:`CorruptModelError` naming the file and the fault; the
  caller marks that replica ``failed`` with the message, and nothing else is touched.
- :meth:`ModelStore.verify_checksums` hashes the files the manifest lists (slow: it reads everything).
- :meth:`ModelStore.load` copies the tensors' bytes from the files (the page cache) straight into the
  slot's memory with ``preadv`` into a memoryview of the slot — one copy, large reads, several threads —
  in the background. The returned :class:`LoadTask` reports progress, can be cancelled (it stops after
  the reads in flight and unmaps nothing: the caller decides), and ends ``failed`` with a reason (a
  truncated or vanished file, an unmapped slot) instead of raising into the caller's thread.

Tensor parallelism is out of scope here: a replica with ``tensor_parallel > 1`` would need each GPU's
shard of every tensor, which this store does not cut.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError
from warmserve.worker.layout import DEFAULT_ALIGNMENT, TensorEntry, WeightLayout, align_up
from warmserve.worker.pool.base import Slot

if TYPE_CHECKING:  # imported by the functions that make tensors: a fake-GPU worker runs without torch
    import torch

CONFIG_FILE = "config.json"
MANIFEST_FILE = "SHA256SUMS"
WEIGHTS_GLOB = "*.safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
DEFAULT_PIECE_BYTES = 8 * 1024 * 1024  # one read; also the granularity of progress and cancellation

#: Each safetensors dtype: the name of its torch dtype, and its bytes per element (checked against torch in
#: the tests). Names, not torch objects, so that reading a checkpoint's structure needs no torch.
DTYPES: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        "BOOL": ("bool", 1),
        "U8": ("uint8", 1),
        "I8": ("int8", 1),
        "F8_E4M3": ("float8_e4m3fn", 1),
        "F8_E5M2": ("float8_e5m2", 1),
        "I16": ("int16", 2),
        "U16": ("uint16", 2),
        "F16": ("float16", 2),
        "BF16": ("bfloat16", 2),
        "I32": ("int32", 4),
        "U32": ("uint32", 4),
        "F32": ("float32", 4),
        "I64": ("int64", 8),
        "U64": ("uint64", 8),
        "F64": ("float64", 8),
    }
)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of safetensors dtype ``name`` (a key of :data:`DTYPES`; KeyError otherwise)."""
    import torch

    dtype: torch.dtype = getattr(torch, DTYPES[name][0])
    return dtype


class CorruptModelError(InvalidInputError):
    """A checkpoint is missing, unreadable or inconsistent; ``reason`` says which file and what is wrong."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"model {model!r}: {reason}")


@dataclass(frozen=True, slots=True)
class TensorSource:
    """Where one tensor's bytes are: a file and the absolute byte range in it."""

    name: str
    file: Path
    start: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An inspected model: its config, where each tensor is on disk, and where it goes in a slot."""

    model: str
    path: Path
    config: Mapping[str, Any]
    sources: tuple[TensorSource, ...]  # in layout (slot) order
    layout: WeightLayout

    @property
    def total_bytes(self) -> int:
        return self.layout.total_bytes


class LoadState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """A snapshot of a load; ``reason`` is set when it ``failed``."""

    state: LoadState
    done_bytes: int
    total_bytes: int
    reason: str = ""

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


class ModelStore:
    """The weight cache under ``root``: one directory per model (``org/name`` nesting allowed)."""

    def __init__(self, root: str | Path, *, alignment: int = DEFAULT_ALIGNMENT) -> None:
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 8:
            raise InvalidFieldError("alignment", "an integer >= 8 (the widest element size)", alignment)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidFieldError("root", "an existing directory", str(root))
        self.alignment = alignment

    def models(self) -> tuple[str, ...]:
        """Every directory below the root that holds a ``config.json``, as a model name, sorted."""
        configs = (p for p in self.root.rglob(CONFIG_FILE) if p.parent != self.root)
        return tuple(sorted(p.parent.relative_to(self.root).as_posix() for p in configs))

    def path(self, model: str) -> Path:
        """The directory of ``model``: a name relative to the root, or an absolute path inside it.

        Anything that could leave the root (``..``, an absolute path elsewhere, empty parts) raises
        :class:`InvalidFieldError`.
        """
        name = model
        if model.startswith("/") and Path(model).is_relative_to(self.root.absolute()):
            name = Path(model).relative_to(self.root.absolute()).as_posix()
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise InvalidFieldError(
                "model", f"a directory under {self.root} (relative, or absolute inside)", model
            )
        return self.root.joinpath(*parts)

    def inspect(self, model: str) -> Checkpoint:
        """Check the checkpoint's structure and lay it out; :class:`CorruptModelError` says what is wrong."""
        path = self.path(model)
        if not path.is_dir():
            raise CorruptModelError(model, f"no directory {path}")
        config = _read_config(model, path / CONFIG_FILE)
        files = sorted(path.glob(WEIGHTS_GLOB))
        if not files:
            raise CorruptModelError(model, f"no {WEIGHTS_GLOB} file in {path}")
        tensors = [t for f in files for t in _read_file_index(model, f)]
        _check_unique(model, tensors)
        if not tensors:
            raise CorruptModelError(model, "the checkpoint holds no tensors")
        layout = _lay_out(tensors, self.alignment)
        sources = tuple(TensorSource(name, file, start, size) for name, _, _, file, start, size in tensors)
        return Checkpoint(model, path, MappingProxyType(config), sources, layout)

    def verify_checksums(self, model: str) -> bool:
        """Hash the files listed in ``SHA256SUMS``; False if there is no manifest (nothing to verify).

        Raises :class:`CorruptModelError` on a mismatch, a listed file that is missing, or a weights file
        the manifest leaves out. Reads every byte: run it when a model arrives, not on every load.
        """
        path = self.path(model)
        manifest = path / MANIFEST_FILE
        if not manifest.is_file():
            return False
        expected = _read_manifest(model, manifest)
        unlisted = sorted(f.name for f in path.glob(WEIGHTS_GLOB) if f.name not in expected)
        if unlisted:
            raise CorruptModelError(model, f"{MANIFEST_FILE} does not list {unlisted}")
        for name, digest in expected.items():
            _check_digest(model, path / name, digest)
        return True

    def load(
        self,
        checkpoint: Checkpoint,
        slot: Slot,
        *,
        offset: int = 0,
        threads: int = 2,
        piece_bytes: int = DEFAULT_PIECE_BYTES,
    ) -> LoadTask:
        """Start copying ``checkpoint`` into ``slot`` at ``offset`` in the background; returns at once.

        The slot range ``[offset, offset + checkpoint.total_bytes)`` must already be mapped (else the task
        fails with that reason). ``threads`` readers share the work: one reader rarely reaches memory
        bandwidth. Bad parameters raise :class:`InvalidFieldError` here, before anything starts.
        """
        for name, value, minimum in (
            ("offset", offset, 0),
            ("threads", threads, 1),
            ("piece_bytes", piece_bytes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidFieldError(name, f"an integer >= {minimum}", value)
        if offset % self.alignment:
            raise InvalidFieldError("offset", f"a multiple of the alignment ({self.alignment})", offset)
        return LoadTask(checkpoint, slot, offset, threads, piece_bytes)


def slot_tensors(layout: WeightLayout, slot: Slot, offset: int = 0) -> dict[str, torch.Tensor]:
    """Typed, shaped zero-copy views of every tensor of ``layout`` in ``slot`` (what an engine adopts).

    The views keep the slot's weight range busy (it cannot be unmapped) for as long as they live.
    """
    return {
        entry.name: slot.view(offset + entry.offset, entry.nbytes)
        .view(torch_dtype(entry.dtype))
        .view(entry.shape)
        for entry in layout
    }


class LoadTask:
    """A load running in background threads; see :meth:`ModelStore.load`. Never raises into its caller."""

    def __init__(
        self, checkpoint: Checkpoint, slot: Slot, offset: int, threads: int, piece_bytes: int
    ) -> None:
        self.checkpoint = checkpoint
        self._slot = slot
        self._offset = offset
        self._threads = threads
        self._pieces = _pieces(checkpoint, piece_bytes)
        self.total_bytes = sum(p[3] for p in self._pieces)  # tensor bytes, without alignment padding
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._cancelled = False
        self._done_bytes = 0
        self._reason = ""
        self._state = LoadState.RUNNING
        threading.Thread(target=self._run, name=f"load-{checkpoint.model}", daemon=True).start()

    def progress(self) -> LoadProgress:
        with self._lock:
            return LoadProgress(self._state, self._done_bytes, self.total_bytes, self._reason)

    def cancel(self) -> None:
        """Stop after the reads in flight; no effect once the load has ended. Unmaps nothing."""
        with self._lock:
            self._cancelled = True
        self._stop.set()

    def wait(self, timeout: float | None = None) -> LoadProgress:
        """Block until the load ends (or ``timeout`` seconds pass) and return its progress."""
        self._finished.wait(timeout)
        return self.progress()

    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # a background task reports every failure; nothing may escape the thread
            self._fail(str(exc) or type(exc).__name__)
        finally:
            self._finish()

    def _load(self) -> None:
        """Fill the slot; the view (which keeps the range busy) dies with this frame, when the load ends."""
        target = self._slot.view(self._offset, self.checkpoint.total_bytes)
        if target.device.type != "cpu":
            raise InvalidInputError(f"the store loads into host memory only, not {target.device.type}")
        with ExitStack() as stack:
            buffer = stack.enter_context(target.numpy().data)
            fds = _open_all(stack, {p[0] for p in self._pieces})
            work = iter(self._pieces)
            readers = [
                threading.Thread(target=self._read, args=(work, buffer, fds), daemon=True)
                for _ in range(self._threads - 1)
            ]
            for reader in readers:
                reader.start()
            self._read(work, buffer, fds)
            for reader in readers:
                reader.join()

    def _read(self, work: Iterator[_Piece], buffer: memoryview, fds: Mapping[Path, int]) -> None:
        """Take pieces until none are left, the load is cancelled, or a piece fails."""
        while not self._stop.is_set():
            with self._lock:
                piece = next(work, None)
            if piece is None:
                return
            try:
                _copy_piece(piece, buffer, fds)
            except Exception as exc:  # as in _run: reported as the load's failure, never lost with the thread
                self._fail(str(exc) or type(exc).__name__)
                return
            with self._lock:
                self._done_bytes += piece[3]

    def _fail(self, reason: str) -> None:
        with self._lock:
            self._reason = self._reason or reason  # the first failure is the cause
        self._stop.set()

    def _finish(self) -> None:
        with self._lock:
            if self._reason:
                self._state = LoadState.FAILED
            elif self._cancelled and self._done_bytes < self.total_bytes:
                self._state = LoadState.CANCELLED
            else:
                self._state = LoadState.DONE
        self._finished.set()


# --- reading checkpoints -----------------------------------------------------------------------------

_Tensor = tuple[str, str, tuple[int, ...], Path, int, int]  # name, dtype, shape, file, start, nbytes
_Piece = tuple[Path, int, int, int]  # file, file offset, slot offset (relative), nbytes

_ITEM_BYTES: Mapping[str, int] = MappingProxyType({k: size for k, (_, size) in DTYPES.items()})


def _read_config(model: str, path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptModelError(model, f"missing {path.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptModelError(model, f"{path.name} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CorruptModelError(model, f"{path.name} is not a JSON object")
    return config


def _read_header(model: str, path: Path) -> tuple[dict[str, Any], int, int]:
    """The JSON header of a safetensors file, where its data starts, and the file size."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if length < 0 or length > min(size - 8, MAX_HEADER_BYTES):
                raise CorruptModelError(model, f"{path.name}: bad header length (file of {size} bytes)")
            header = json.loads(f.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptModelError(model, f"{path.name}: unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptModelError(model, f"{path.name}: the header is not a JSON object")
    return header, 8 + length, size


def _read_file_index(model: str, path: Path) -> list[_Tensor]:
    """Every tensor of one file, checked, sorted by position; the data must tile the file exactly."""
    header, data_start, size = _read_header(model, path)
    tensors = sorted(
        (
            _parse_entry(model, path, name, meta, data_start)
            for name, meta in header.items()
            if name != "__metadata__"
        ),
        key=lambda t: t[4],
    )
    position = data_start
    for name, _, _, _, start, nbytes in tensors:
        if start != position:
            raise CorruptModelError(
                model, f"{path.name}: tensor {name!r} overlaps or leaves a gap at {start}"
            )
        position = start + nbytes
    if position != size:
        problem = "is truncated" if position > size else "has trailing bytes"
        raise CorruptModelError(
            model, f"{path.name} {problem}: data ends at {position}, file has {size} bytes"
        )
    return tensors


def _parse_entry(model: str, path: Path, name: str, meta: object, data_start: int) -> _Tensor:
    where = f"{path.name}: tensor {name!r}"
    if not isinstance(meta, dict):
        raise CorruptModelError(model, f"{where}: entry is not an object")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ITEM_BYTES:
        raise CorruptModelError(model, f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptModelError(model, f"{where}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CorruptModelError(model, f"{where}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = int(offsets[0]), int(offsets[1])
    nbytes = math.prod(shape) * _ITEM_BYTES[dtype]
    if begin < 0 or end - begin != nbytes:
        raise CorruptModelError(model, f"{where}: data_offsets {offsets} do not hold {nbytes} bytes")
    return name, dtype, tuple(shape), path, data_start + begin, nbytes


def _check_unique(model: str, tensors: list[_Tensor]) -> None:
    seen: dict[str, Path] = {}
    for name, _, _, file, _, _ in tensors:
        if name in seen:
            raise CorruptModelError(model, f"tensor {name!r} is in both {seen[name].name} and {file.name}")
        seen[name] = file


def _lay_out(tensors: list[_Tensor], alignment: int) -> WeightLayout:
    """Place tensors in file order at aligned offsets, so a load reads each file front to back."""
    entries: dict[str, TensorEntry] = {}
    offset = 0
    for name, dtype, shape, _, _, nbytes in tensors:
        entries[name] = TensorEntry(name, dtype, shape, offset, nbytes)
        offset = align_up(offset + nbytes, alignment)
    return WeightLayout(MappingProxyType(entries), offset, alignment)


def _read_manifest(model: str, path: Path) -> dict[str, str]:
    expected: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().removeprefix("*")
        if len(digest) != 64 or not name or "/" in name:
            raise CorruptModelError(model, f"{MANIFEST_FILE} line {number} is not '<sha256>  <file>'")
        expected[name] = digest.lower()
    return expected


def _check_digest(model: str, path: Path, digest: str) -> None:
    try:
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise CorruptModelError(model, f"{path.name}: cannot be read for its checksum: {exc}") from None
    if actual != digest:
        raise CorruptModelError(model, f"{path.name}: sha256 {actual} does not match {MANIFEST_FILE}")


# --- loading -----------------------------------------------------------------------------------------


def _pieces(checkpoint: Checkpoint, piece_bytes: int) -> tuple[_Piece, ...]:
    """Cut every tensor copy into reads of at most ``piece_bytes``, in slot order."""
    pieces: list[_Piece] = []
    for source in checkpoint.sources:
        slot_offset = checkpoint.layout.entries[source.name].offset
        for done in range(0, source.nbytes, piece_bytes):
            size = min(piece_bytes, source.nbytes - done)
            pieces.append((source.file, source.start + done, slot_offset + done, size))
    return tuple(pieces)


def _open_all(stack: ExitStack, files: set[Path]) -> dict[Path, int]:
    fds: dict[Path, int] = {}
    for file in files:
        fds[file] = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, fds[file])
    return fds


def _copy_piece(piece: _Piece, buffer: memoryview, fds: Mapping[Path, int]) -> None:
    """Read one piece straight into the slot; a file that ends early is a failure, not a short copy."""
    file, file_offset, slot_offset, nbytes = piece
    done = 0
    while done < nbytes:
        count = os.preadv(fds[file], [buffer[slot_offset + done : slot_offset + nbytes]], file_offset + done)
        if count == 0:
            raise InvalidInputError(f"{file.name} is truncated: it ends before byte {file_offset + nbytes}")
        done += count
