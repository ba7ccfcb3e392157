"""Read and write the `.mort` tensor exchange file (docs/MODEL.md, last section).

Layout, little-endian:
    "MORTNSR1" (8 bytes), u32 count, then per tensor:
    u32 name_len, name bytes (UTF-8), u32 dtype (0 = float32, 1 = int32), u32 ndim,
    i64 dims[ndim], data (row-major).

write_mort stores every floating array as float32 (float64 is narrowed) and every
integer/bool array as int32 (values must fit). read_mort returns a dict that keeps
the file's order; arrays come back as float32 or int32.
"""
import struct

import numpy as np

MAGIC = b"MORTNSR1"
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<i4")}


def write_mort(path, tensors):
    """Write name -> array (numpy, or anything np.asarray takes, incl. torch tensors) in dict order."""
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(tensors)))
        for name, arr in tensors.items():
            if hasattr(arr, "detach"):  # torch tensor
                arr = arr.detach().cpu().numpy()
            a = np.asarray(arr)
            if a.dtype.kind == "f":
                code, a = 0, a.astype("<f4")
            elif a.dtype.kind in "iub":
                if a.size and (a.min() < -2**31 or a.max() > 2**31 - 1):
                    raise ValueError(f"write_mort: {name}: integer values do not fit in int32")
                code, a = 1, a.astype("<i4")
            else:
                raise TypeError(f"write_mort: {name}: unsupported dtype {a.dtype}")
            nb = name.encode("utf-8")
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<II", code, a.ndim))
            f.write(struct.pack(f"<{a.ndim}q", *a.shape))
            f.write(np.ascontiguousarray(a).tobytes())


def read_mort(path):
    """Return {name: np.ndarray} in file order. Raises ValueError on a malformed file."""
    with open(path, "rb") as f:
        buf = f.read()
    off = 0

    def take(n, what):
        nonlocal off
        if off + n > len(buf):
            raise ValueError(f"read_mort: {path}: truncated while reading {what}")
        b = buf[off:off + n]
        off += n
        return b

    if take(8, "magic") != MAGIC:
        raise ValueError(f"read_mort: {path}: bad magic (not a MORTNSR1 file)")
    (count,) = struct.unpack("<I", take(4, "count"))
    out = {}
    for i in range(count):
        (name_len,) = struct.unpack("<I", take(4, f"name length of tensor {i}"))
        name = take(name_len, f"name of tensor {i}").decode("utf-8")
        code, ndim = struct.unpack("<II", take(8, f"dtype/ndim of {name}"))
        if code not in DTYPES:
            raise ValueError(f"read_mort: {path}: {name}: unknown dtype code {code}")
        dims = struct.unpack(f"<{ndim}q", take(8 * ndim, f"dims of {name}"))
        if any(d < 0 for d in dims):
            raise ValueError(f"read_mort: {path}: {name}: negative dimension {dims}")
        if name in out:
            raise ValueError(f"read_mort: {path}: duplicate tensor name {name}")
        dt = DTYPES[code]
        n = int(np.prod(dims, dtype=np.int64))
        data = take(n * dt.itemsize, f"data of {name}")
        out[name] = np.frombuffer(data, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))
    if off != len(buf):
        raise ValueError(f"read_mort: {path}: {len(buf) - off} trailing bytes after {count} tensors")
    return out
