"""Read TensorFlow.js weight manifests (the format face-api ships) into numpy arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16}


def load_weights(manifest_path: Path) -> dict[str, np.ndarray]:
    """All weights of a manifest, dequantised to float32 (value = q * scale + min) where quantised."""
    groups = json.loads(Path(manifest_path).read_text())
    weights: dict[str, np.ndarray] = {}
    for group in groups:
        data = b"".join((Path(manifest_path).parent / shard).read_bytes() for shard in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = tuple(spec["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            stored = _DTYPES[quant["dtype"] if quant else spec["dtype"]]
            size = count * np.dtype(stored).itemsize
            if offset + size > len(data):
                raise ValueError(f"{manifest_path}: shard data ends before weight {spec['name']}")
            raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += size
            value = raw.astype(np.float32) * quant["scale"] + quant["min"] if quant else raw.astype(np.float32)
            weights[spec["name"]] = value.astype(np.float32).reshape(shape)
        if offset != len(data):
            raise ValueError(f"{manifest_path}: {len(data) - offset} bytes of shard data left over")
    return weights
