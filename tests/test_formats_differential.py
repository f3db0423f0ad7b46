"""Differential: picklewarden's safetensors validation accepts exactly the headers the reference reader
(the safetensors package) opens, on generated headers with shuffled, overlapping, gapped and mis-sized
tensors, unknown dtypes and trailing bytes."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from picklewarden.formats import safetensors as ours

_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8, "XX": 4}


@st.composite
def files(draw: st.DrawFn) -> bytes:
    header: dict[str, object] = {}
    offset = 0
    for index in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(sorted(_DTYPES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        count = 1
        for dim in shape:
            count *= dim
        size = count * _DTYPES[dtype]
        begin = offset + draw(st.sampled_from([0, 0, 0, 1, -1, 4]))
        end = begin + size + draw(st.sampled_from([0, 0, 0, 1, -1]))
        header[f"t{index}"] = {"dtype": dtype, "shape": shape, "data_offsets": [max(begin, 0), max(end, 0)]}
        offset = max(end, 0)
    if draw(st.booleans()):
        header["__metadata__"] = {"format": draw(st.sampled_from(["pt", 1]))}
    data_size = offset + draw(st.sampled_from([0, 0, 0, 1, 8]))
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_size)


def _reference_accepts(data: bytes) -> bool:
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.safetensors"
        path.write_bytes(data)
        try:
            with safe_open(str(path), "np") as handle:
                list(handle.keys())
        except Exception:  # noqa: BLE001 - any refusal is a refusal
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(files())
def test_validation_agrees_with_the_reference_reader(data: bytes) -> None:
    problems = ours.validate(data)
    assert (not problems) == _reference_accepts(data), problems
