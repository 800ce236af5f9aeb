"""Checkpoints as numpy arrays, without PyTorch and without running pickled code.

torchvision's weights (`resnet50-11ad3fa6.pth`) are a zip holding a pickle of the state
dict and each tensor's raw bytes; older files (torch < 1.6's format, which the
EfficientNet-Lite0 package ships) are a run of pickles followed by each storage's raw
bytes. The pickle is read by an unpickler that knows only the few names a state dict
uses (as `torch.load(weights_only=True)` does) and builds numpy arrays in place of
tensors; any other name is refused before anything runs. The zip is read in place, never
extracted. A `.safetensors` file is read by safetensors' numpy API.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsUnavailable

# torch's storage classes -> the dtype of their bytes (the zip's byteorder file says
# little-endian for every checkpoint torch writes on the machines that run dupecheck)
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
MAX_CHECKPOINT_BYTES = 2 * 1024 ** 3  # no image model dupecheck runs is larger
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _StorageType:
    """Stands for torch.FloatStorage & co. in the pickle: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, for numpy: a view of the storage, copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError("negative size, stride or offset")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True) if n > 0)
    if size and 0 not in size and last >= len(storage):
        raise ValueError("a tensor reaches past its storage")
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride],
                                           writeable=False)
    return np.ascontiguousarray(view)


class _StateDictUnpickler(pickle.Unpickler):
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")}

    def __init__(self, fh: Any, storages: dict[str, np.ndarray], read: Any) -> None:
        super().__init__(fh)
        self._storages = storages
        self._read = read

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"the pickle names {module}.{name}, which a state dict "
                                     f"never does; nothing of it was run")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _KEY.match(pid[2]) and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        key, dtype, count = pid[2], pid[1].dtype, pid[4]
        if key not in self._storages:
            data = self._read(key)
            if len(data) < count * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} is cut short")
            self._storages[key] = np.frombuffer(data, dtype=dtype.newbyteorder("<"),
                                                count=count)
        return self._storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as a numpy array, by name; WeightsUnavailable (naming
    the file, exit 3) for anything that is not a plain state dict."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            state: Any = load_file(str(path))
        else:
            state = _read_torch_zip(path)
    except WeightsUnavailable:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError, OSError,
            EOFError, TypeError, AttributeError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailable(f"not a loadable checkpoint ({reason[:200]})", path) from exc
    except Exception as exc:  # safetensors' own error types
        raise WeightsUnavailable(f"not a loadable checkpoint ({type(exc).__name__}: "
                                 f"{str(exc)[:160]})", path) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
        raise WeightsUnavailable("checkpoint holds no state dict of tensors", path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read_torch_zip(path: Path) -> Any:
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise WeightsUnavailable("larger than any image model's weights", path)
    if not zipfile.is_zipfile(path):
        return _read_torch_legacy(path)
    with zipfile.ZipFile(path) as zf:
        names = {info.filename: info for info in zf.infolist()}
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsUnavailable("no data.pkl at the top of the checkpoint", path)
        prefix = pickles[0][: -len("data.pkl")]
        order = zf.read(prefix + "byteorder").strip() if prefix + "byteorder" in names \
            else b"little"
        if order != b"little":
            raise WeightsUnavailable(f"a {order.decode(errors='replace')}-endian "
                                     f"checkpoint", path)

        def read(key: str) -> bytes:
            member = names.get(f"{prefix}data/{key}")
            if member is None:
                raise pickle.UnpicklingError(f"storage {key} is missing")
            if member.file_size > MAX_CHECKPOINT_BYTES:
                raise pickle.UnpicklingError(f"storage {key} is too large")
            return zf.read(member)

        with zf.open(pickles[0]) as fh:
            return _StateDictUnpickler(fh, {}, read).load()


class _LegacyStorage:
    """A storage of the legacy format whose bytes come after the pickle: only its size."""

    def __init__(self, dtype: np.dtype, count: int) -> None:
        self.dtype, self.count = dtype, count


def _tensor_extent(storage: _LegacyStorage, offset: int, size: tuple[int, ...],
                   stride: tuple[int, ...], *_: Any) -> None:
    """The first pass's `_rebuild_tensor_v2`: the tensor must lie inside its storage."""
    if offset < 0 or any(int(s) < 0 for s in (*size, *stride)):
        raise ValueError("negative size, stride or offset")
    last = offset + sum((int(n) - 1) * int(s) for n, s in zip(size, stride, strict=True)
                        if int(n) > 0)
    if 0 not in size and last >= storage.count:
        raise ValueError("a tensor reaches past its storage")


class _LegacyUnpickler(_StateDictUnpickler):
    """The legacy format's persistent ids: ('storage', type, key, location, count, None).
    Without arrays (the first pass) it records each storage's size and builds nothing."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2") and self._read is None:
            return _tensor_extent
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _KEY.match(pid[2]) and isinstance(pid[4], int) and pid[4] >= 0
                and pid[5] is None):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        key, dtype, count = pid[2], pid[1].dtype, pid[4]
        if self._read is None:
            known = self._storages.setdefault(key, _LegacyStorage(dtype, count))
            if (known.dtype, known.count) != (dtype, count):
                raise pickle.UnpicklingError(f"storage {key} is named with two sizes")
            return known
        return self._storages[key]


_NOT_A_CHECKPOINT = "not a loadable checkpoint (neither the zip torch.save writes nor its " \
                    "older format)"


def _read_torch_legacy(path: Path) -> Any:
    """torch < 1.6's format: pickles of the magic number, the protocol version and the
    system's sizes, the state dict (its tensors naming storages by key), the storages' keys
    in order; then each storage as a little-endian int64 count and its raw bytes. The state
    dict's pickle is read twice: once for each storage's size, once with the bytes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        try:
            magic = _StateDictUnpickler(fh, {}, None).load()
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError) as exc:
            raise WeightsUnavailable(_NOT_A_CHECKPOINT, path) from exc
        if magic != LEGACY_MAGIC:
            raise WeightsUnavailable(_NOT_A_CHECKPOINT, path)
        if _StateDictUnpickler(fh, {}, None).load() != LEGACY_PROTOCOL:
            raise WeightsUnavailable("a torch checkpoint of an unknown protocol", path)
        info = _StateDictUnpickler(fh, {}, None).load()
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            raise WeightsUnavailable("not a little-endian torch checkpoint", path)
        start = fh.tell()
        storages: dict[str, Any] = {}
        _LegacyUnpickler(fh, storages, None).load()
        keys = _StateDictUnpickler(fh, {}, None).load()
        if not (isinstance(keys, list) and len(set(keys)) == len(keys)
                and set(keys) == set(storages)):
            raise pickle.UnpicklingError("the storage keys do not match the tensors")
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            lazy = storages[key]
            count = int.from_bytes(fh.read(8), "little", signed=True)
            nbytes = lazy.count * lazy.dtype.itemsize
            if count != lazy.count or fh.tell() + nbytes > size:
                raise pickle.UnpicklingError(f"storage {key} is cut short or of another size")
            arrays[key] = np.frombuffer(fh.read(nbytes), dtype=lazy.dtype.newbyteorder("<"),
                                        count=lazy.count)
        fh.seek(start)
        return _LegacyUnpickler(fh, arrays, lambda key: b"").load()


def write_graph(weights: Path, spec: Any, dest: Path, graph: Any) -> Path:
    """Read the checkpoint, build its ONNX model with `graph(state, side)`, write it to
    `dest` atomically; a checkpoint of another model is one line naming the file."""
    import os

    import onnx

    state = read_state_dict(weights)
    try:
        model = graph(state, spec.crop)
    except KeyError as exc:
        raise WeightsUnavailable(f"not a {spec.name} checkpoint (no {exc.args[0]})",
                                 weights) from None
    except ValueError as exc:  # shapes that cannot be folded
        raise WeightsUnavailable(f"not a {spec.name} checkpoint ({exc})", weights) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dest)
    return dest
