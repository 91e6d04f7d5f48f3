"""The model store: integrity checks, layout, and background loads into real host-pool slots."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from warmserve.protocol.errors import InvalidFieldError
from warmserve.worker.pool import MemoryPool, Slot
from warmserve.worker.pool.fake import FakePool
from warmserve.worker.pool.host import HostPool
from warmserve.worker.store import (
    DTYPES,
    Checkpoint,
    CorruptModelError,
    LoadState,
    ModelStore,
    slot_tensors,
    torch_dtype,
)

CHUNK = 2 * 1024 * 1024


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        "embed.weight": torch.randn(33, 7, generator=gen).to(torch.float16),
        "layer.0.w": torch.randn(5, 3, generator=gen).to(torch.bfloat16),
        "layer.0.b": torch.randn(3, generator=gen),
        "positions": torch.arange(11, dtype=torch.int64),
        "mask": torch.rand(9, generator=gen) > 0.5,
        "empty": torch.zeros(0, 4),
    }


def _write_model(root: Path, name: str, tensors: dict[str, torch.Tensor], *, files: int = 2) -> Path:
    """A model directory: config.json and the tensors spread over ``files`` safetensors files."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 7}))
    names = sorted(tensors)
    for i in range(files):
        part = {n: tensors[n] for n in names[i::files]}
        save_file(part, str(path / f"model-{i:05d}-of-{files:05d}.safetensors"))
    return path


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    _write_model(tmp_path, "tiny", _tensors())
    return ModelStore(tmp_path)


@pytest.fixture
def pool() -> Iterator[HostPool]:
    with HostPool(8 * CHUNK, CHUNK) as p:
        yield p


def _mapped_slot(pool: MemoryPool, checkpoint: Checkpoint, offset: int = 0) -> Slot:
    slot = pool.create_slot()
    pool.map(slot, offset, checkpoint.total_bytes)
    return slot


def _shard(path: Path) -> Path:
    return sorted(path.glob("*.safetensors"))[0]


# --- inspection and layout -------------------------------------------------------------------------


def test_inspect_lays_tensors_out_aligned_and_in_file_order(store: ModelStore) -> None:
    checkpoint = store.inspect("tiny")
    assert store.models() == ("tiny",)
    assert checkpoint.config["model_type"] == "llama"
    assert set(checkpoint.layout.entries) == set(_tensors())
    entries = list(checkpoint.layout)
    assert all(e.offset % 64 == 0 for e in entries)
    assert all(a.offset + a.nbytes <= b.offset for a, b in itertools.pairwise(entries))
    assert checkpoint.total_bytes % 64 == 0
    assert checkpoint.total_bytes >= entries[-1].offset + entries[-1].nbytes
    assert checkpoint.layout.entries["embed.weight"].dtype == "F16"
    assert checkpoint.layout.entries["embed.weight"].shape == (33, 7)
    files = [s.file for s in checkpoint.sources]
    assert files == sorted(files)  # one file after the other: sequential reads
    assert [s.name for s in checkpoint.sources] == [e.name for e in entries]


def test_models_are_found_in_nested_directories(tmp_path: Path) -> None:
    _write_model(tmp_path, "org/a", _tensors(), files=1)
    _write_model(tmp_path, "b", _tensors(), files=1)
    (tmp_path / "config.json").write_text("{}")  # the root itself is no model
    store = ModelStore(tmp_path)
    assert store.models() == ("b", "org/a")
    assert len(store.inspect("org/a").layout) == len(_tensors())


@pytest.mark.parametrize("name", ["", "../etc", "/abs/model", "a/../b", "./a"])
def test_model_names_cannot_escape_the_root(store: ModelStore, name: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        store.inspect(name)
    assert info.value.field == "model"


def test_an_absolute_path_inside_the_root_names_the_model(store: ModelStore, tmp_path: Path) -> None:
    assert store.path(str(tmp_path / "tiny")) == store.path("tiny")
    assert store.inspect(str(tmp_path / "tiny")).layout == store.inspect("tiny").layout
    with pytest.raises(InvalidFieldError):
        store.path(str(tmp_path))  # the root itself is no model
    with pytest.raises(InvalidFieldError):
        store.path(str(tmp_path / "tiny" / ".." / ".." / "x"))


def test_store_parameters_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidFieldError) as info:
        ModelStore(tmp_path / "nope")
    assert info.value.field == "root"
    with pytest.raises(InvalidFieldError) as info:
        ModelStore(tmp_path, alignment=4)
    assert info.value.field == "alignment"


def _header_file(path: Path, header: object, data: bytes, length: int | None = None) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


_F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "data", "length", "reason"),
    [
        ({"a": _F32_2}, b"\0" * 4, None, "is truncated"),
        ({"a": _F32_2}, b"\0" * 12, None, "has trailing bytes"),
        ({"a": _F32_2}, b"\0" * 8, 10**9, "bad header length"),
        ([1, 2], b"", None, "not a JSON object"),
        ({"a": {**_F32_2, "dtype": "F12"}}, b"\0" * 8, None, "unknown dtype"),
        ({"a": {**_F32_2, "shape": [-2]}}, b"\0" * 8, None, "not a list of sizes"),
        ({"a": {**_F32_2, "data_offsets": [0]}}, b"\0" * 8, None, "is not [begin, end]"),
        ({"a": {**_F32_2, "data_offsets": [0, 12]}}, b"\0" * 12, None, "do not hold 8 bytes"),
        ({"a": _F32_2, "b": _F32_2}, b"\0" * 8, None, "overlaps or leaves a gap"),
        ({"a": {**_F32_2, "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlaps or leaves a gap"),
        ({"a": "F32"}, b"", None, "entry is not an object"),
        ({}, b"", None, "holds no tensors"),
    ],
)
def test_corrupt_headers_are_refused_with_the_reason(
    tmp_path: Path, header: object, data: bytes, length: int | None, reason: str
) -> None:
    path = tmp_path / "bad"
    path.mkdir()
    (path / "config.json").write_text("{}")
    _header_file(path / "model.safetensors", header, data, length)
    with pytest.raises(CorruptModelError, match=re.escape(reason)) as info:
        ModelStore(tmp_path).inspect("bad")
    assert info.value.model == "bad"


def test_unparsable_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CorruptModelError, match="unreadable header"):
        ModelStore(tmp_path).inspect("bad")


def test_missing_pieces_of_a_model_are_named(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(CorruptModelError, match="no directory"):
        store.inspect("absent")
    (tmp_path / "tiny" / "config.json").write_text("[]")
    with pytest.raises(CorruptModelError, match="not a JSON object"):
        store.inspect("tiny")
    (tmp_path / "tiny" / "config.json").write_text("{oops")
    with pytest.raises(CorruptModelError, match="not readable JSON"):
        store.inspect("tiny")
    (tmp_path / "tiny" / "config.json").unlink()
    with pytest.raises(CorruptModelError, match=r"missing config\.json"):
        store.inspect("tiny")
    (tmp_path / "tiny" / "config.json").write_text("{}")
    for shard in (tmp_path / "tiny").glob("*.safetensors"):
        shard.unlink()
    with pytest.raises(CorruptModelError, match=r"no \*.safetensors file"):
        store.inspect("tiny")


def test_a_tensor_in_two_files_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup"
    path.mkdir()
    (path / "config.json").write_text("{}")
    for i in range(2):
        save_file({"w": torch.ones(2)}, str(path / f"m{i}.safetensors"))
    with pytest.raises(CorruptModelError, match=r"'w' is in both m0\.safetensors and m1\.safetensors"):
        ModelStore(tmp_path).inspect("dup")


# --- checksums -------------------------------------------------------------------------------------


def _write_manifest(path: Path, names: list[str]) -> None:
    lines = [f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}" for n in names]
    (path / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_checksums_pass_fail_and_absent(store: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    assert store.verify_checksums("tiny") is False
    names = [*sorted(p.name for p in path.glob("*.safetensors")), "config.json"]
    _write_manifest(path, names)
    assert store.verify_checksums("tiny") is True
    shard = _shard(path)
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # same size, so only the checksum can tell
    shard.write_bytes(bytes(raw))
    store.inspect("tiny")
    with pytest.raises(CorruptModelError, match="does not match SHA256SUMS"):
        store.verify_checksums("tiny")


def test_manifest_must_cover_every_weights_file_and_be_well_formed(store: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    _write_manifest(path, ["config.json"])
    with pytest.raises(CorruptModelError, match="does not list"):
        store.verify_checksums("tiny")
    (path / "SHA256SUMS").write_text("abc  config.json\n")
    with pytest.raises(CorruptModelError, match="line 1"):
        store.verify_checksums("tiny")
    names = sorted(p.name for p in path.glob("*.safetensors"))
    _write_manifest(path, names)
    _shard(path).unlink()
    with pytest.raises(CorruptModelError, match="cannot be read"):
        store.verify_checksums("tiny")


# --- loading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("threads", "piece_bytes"), [(1, 8 << 20), (3, 96)])
def test_load_gives_the_same_tensors_as_safetensors(
    store: ModelStore, pool: HostPool, tmp_path: Path, threads: int, piece_bytes: int
) -> None:
    checkpoint = store.inspect("tiny")
    slot = _mapped_slot(pool, checkpoint, offset=CHUNK)
    task = store.load(checkpoint, slot, offset=CHUNK, threads=threads, piece_bytes=piece_bytes)
    result = task.wait(10)
    assert (result.state, result.reason) == (LoadState.DONE, "")
    assert result.done_bytes == result.total_bytes == sum(t.nbytes for t in _tensors().values())
    assert result.fraction == 1.0
    expected = {
        n: t for f in sorted((tmp_path / "tiny").glob("*.safetensors")) for n, t in load_file(f).items()
    }
    loaded = slot_tensors(checkpoint.layout, slot, offset=CHUNK)
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor), name


def test_a_finished_load_leaves_the_slot_free_to_unmap(store: ModelStore, pool: HostPool) -> None:
    checkpoint = store.inspect("tiny")
    slot = _mapped_slot(pool, checkpoint)
    assert store.load(checkpoint, slot).wait(10).state is LoadState.DONE
    assert slot.live_views() == 0
    assert pool.unmap(slot, 0, CHUNK) == 1


def test_cancel_stops_the_load_and_unmaps_nothing(tmp_path: Path, pool: HostPool) -> None:
    _write_model(tmp_path, "big", {"w": torch.ones(12 * 1024 * 1024, dtype=torch.uint8)}, files=1)
    store = ModelStore(tmp_path)
    checkpoint = store.inspect("big")
    slot = _mapped_slot(pool, checkpoint)
    task = store.load(checkpoint, slot, threads=1, piece_bytes=4096)  # 3072 reads: far longer than a cancel
    task.cancel()
    result = task.wait(10)
    assert result.state is LoadState.CANCELLED
    assert result.done_bytes < result.total_bytes
    assert result.done_bytes % 4096 == 0
    assert task.wait(0).done_bytes == result.done_bytes  # it has really stopped
    assert slot.mapped_chunks == 6
    task.cancel()  # no effect once ended
    assert task.progress().state is LoadState.CANCELLED


def test_cancel_after_the_end_changes_nothing(store: ModelStore, pool: HostPool) -> None:
    checkpoint = store.inspect("tiny")
    task = store.load(checkpoint, _mapped_slot(pool, checkpoint))
    assert task.wait(10).state is LoadState.DONE
    task.cancel()
    assert task.progress().state is LoadState.DONE


def test_file_truncated_after_inspection_fails_that_load_only(store: ModelStore, pool: HostPool) -> None:
    """Two replicas load at once; one file is cut short: that one fails with the reason, the other loads."""
    good = store.inspect("tiny")
    _write_model(store.root, "victim", _tensors(), files=1)
    victim = store.inspect("victim")
    shard = _shard(store.root / "victim")
    os.truncate(shard, shard.stat().st_size - 10)
    bad_task = store.load(victim, _mapped_slot(pool, victim), piece_bytes=64)
    good_slot = _mapped_slot(pool, good)
    good_task = store.load(good, good_slot, piece_bytes=64)
    failed, done = bad_task.wait(10), good_task.wait(10)
    assert failed.state is LoadState.FAILED
    assert "truncated" in failed.reason
    assert done.state is LoadState.DONE
    assert torch.equal(slot_tensors(good.layout, good_slot)["embed.weight"], _tensors()["embed.weight"])


def test_file_removed_after_inspection_fails_with_the_reason(store: ModelStore, pool: HostPool) -> None:
    checkpoint = store.inspect("tiny")
    slot = _mapped_slot(pool, checkpoint)
    _shard(store.root / "tiny").unlink()
    result = store.load(checkpoint, slot).wait(10)
    assert result.state is LoadState.FAILED
    assert "No such file" in result.reason
    assert slot.live_views() == 0  # a failed load does not keep the slot busy either


def test_loads_leave_no_file_descriptor_open(store: ModelStore, pool: HostPool) -> None:
    checkpoint = store.inspect("tiny")
    slot = _mapped_slot(pool, checkpoint)
    before = len(os.listdir("/proc/self/fd"))
    for piece_bytes in (64, 4096, 1 << 20):
        assert (
            store.load(checkpoint, slot, threads=2, piece_bytes=piece_bytes).wait(10).state is LoadState.DONE
        )
    cancelled = store.load(checkpoint, slot, piece_bytes=8)
    cancelled.cancel()
    cancelled.wait(10)
    _shard(store.root / "tiny").unlink()
    assert store.load(checkpoint, slot).wait(10).state is LoadState.FAILED
    assert len(os.listdir("/proc/self/fd")) == before


def test_loading_into_an_unmapped_slot_fails_with_the_reason(store: ModelStore, pool: HostPool) -> None:
    checkpoint = store.inspect("tiny")
    result = store.load(checkpoint, pool.create_slot()).wait(10)
    assert (result.state, result.done_bytes) == (LoadState.FAILED, 0)
    assert "not fully mapped" in result.reason


def test_loading_into_a_fake_slot_fails_with_the_reason(store: ModelStore) -> None:
    checkpoint = store.inspect("tiny")
    with FakePool(4 * CHUNK, CHUNK) as fake:
        result = store.load(checkpoint, _mapped_slot(fake, checkpoint)).wait(10)
    assert result.state is LoadState.FAILED
    assert "no bytes" in result.reason


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"offset": 3}, "offset"),
        ({"offset": -64}, "offset"),
        ({"threads": 0}, "threads"),
        ({"piece_bytes": 0}, "piece_bytes"),
    ],
)
def test_bad_load_parameters_are_refused_up_front(
    store: ModelStore, pool: HostPool, kwargs: dict[str, int], field: str
) -> None:
    checkpoint = store.inspect("tiny")
    with pytest.raises(InvalidFieldError) as info:
        store.load(checkpoint, _mapped_slot(pool, checkpoint), **kwargs)
    assert info.value.field == field


_dtypes = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.int8, torch.int64, torch.bool])
_shapes = st.lists(st.integers(0, 17), min_size=0, max_size=3)


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,6}(\.[a-z0-9]{1,4})?", fullmatch=True),
        st.tuples(_dtypes, _shapes),
        min_size=1,
        max_size=8,
    )
)
def test_any_checkpoint_round_trips_through_a_slot(spec: dict[str, tuple[torch.dtype, list[int]]]) -> None:
    tensors = {
        name: (torch.arange(math.prod(shape)) % 7).to(dtype).reshape(shape)
        for name, (dtype, shape) in spec.items()
    }
    with tempfile.TemporaryDirectory() as tmp, HostPool(CHUNK, CHUNK) as pool:
        _write_model(Path(tmp), "m", tensors, files=min(2, len(tensors)))
        store = ModelStore(tmp)
        checkpoint = store.inspect("m")
        slot = _mapped_slot(pool, checkpoint)
        assert store.load(checkpoint, slot, piece_bytes=7).wait(10).state is LoadState.DONE
        loaded = slot_tensors(checkpoint.layout, slot)
        assert all(torch.equal(loaded[n], t) and loaded[n].dtype == t.dtype for n, t in tensors.items())
        del loaded


def test_each_safetensors_dtype_names_a_torch_dtype_of_its_size() -> None:
    for name, (_, size) in DTYPES.items():
        assert torch_dtype(name).itemsize == size, name
