"""HDF5 files (legacy Keras ``.h5`` models): the ``model_config`` attribute holds the Keras config.

Reading HDF5 needs h5py (the ``formats`` extra). Without it the file is an error, never safe: a legacy
Keras model can carry Lambda bytecode in that attribute.
"""

from __future__ import annotations

import json

from picklewarden.containers.base import BufferReader, Data, Opened
from picklewarden.formats import keras

MISSING = "HDF5 file not read: h5py is not installed (pip install 'picklewarden[formats]')"
_CONFIG_ATTRIBUTES = ("model_config", "training_config")


def open_hdf5(data: Data) -> Opened:
    opened = Opened("hdf5")
    try:
        import h5py  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        opened.errors.append(MISSING)
        return opened
    try:
        with h5py.File(BufferReader(data), "r") as handle:
            raw = {name: handle.attrs.get(name) for name in _CONFIG_ATTRIBUTES}
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        opened.errors.append(f"HDF5 file does not open: {exc}")
        return opened
    for name, value in raw.items():
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        try:
            config = json.loads(text)
        except (ValueError, RecursionError) as exc:
            opened.errors.append(f"HDF5 attribute {name} is not JSON: {exc}")
            continue
        if name == "model_config":
            opened.format = "keras-h5"
        opened.anomalies.extend(keras.review(config, f"the Keras {name} attribute"))
    return opened
