"""Samples of the non-pickle model formats: each malicious one creates a *canary* file when its real loader
reads it (``yaml.unsafe_load``, ``hydra.utils.instantiate``, Jinja rendering of a GGUF chat template as
llama-cpp-python does, ``keras.models.load_model``), each benign twin is written by the real library and
loads cleanly. Libraries are imported when a sample is built, never at import time.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FormatCase:
    id: str
    filename: str
    loader: str
    """Key of ``LOADERS`` in tests/test_formats_fire.py."""
    expect: str
    """The scan verdict: ``malicious`` | ``suspicious`` | ``safe``."""
    make: Callable[[Path, Path], None]
    """``make(path, canary)`` writes the sample at ``path``."""
    rules: tuple[str, ...] = ()
    """Rule ids the scan must report."""
    fires: bool = True
    """For malicious cases: the loader runs the payload (False documents a loader that refuses it)."""


def _touch(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# -- YAML and Hydra ------------------------------------------------------------------------------------


def yaml_apply(path: Path, canary: Path) -> None:
    _write(path, f"model: !!python/object/apply:os.system [{json.dumps(_touch(canary))}]\n")


def yaml_tag_alias(path: Path, canary: Path) -> None:
    # A %TAG directive hides the python prefix from a scanner looking for the literal '!!python/'.
    _write(path, f"%TAG !p! tag:yaml.org,2002:python/\n---\n!p!object/apply:subprocess.call [[touch, {canary}]]\n")


def yaml_benign(path: Path, canary: Path) -> None:
    _write(path, "trainer:\n  max_epochs: 3\nsizes: !!python/tuple [1, 2]\nname: demo\n")


def hydra_target(path: Path, canary: Path) -> None:
    _write(path, f"model:\n  _target_: os.system\n  command: {json.dumps(_touch(canary))}\n")


def hydra_partial(path: Path, canary: Path) -> None:
    # _partial_ defers the call to the code that uses the config; our loader then calls it, as a trainer would.
    _write(path, f"model:\n  _target_: posix.system\n  _partial_: true\n  command: {json.dumps(_touch(canary))}\n")


def hydra_benign(path: Path, canary: Path) -> None:
    _write(
        path,
        "model:\n  _target_: torch.nn.Linear\n  in_features: 4\n  out_features: 2\n"
        "optim:\n  _target_: collections.OrderedDict\n",
    )


def _torch_bytes(obj: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def nemo_target(path: Path, canary: Path) -> None:
    config = f"_target_: os.system\ncommand: {json.dumps(_touch(canary))}\n"
    _tar(path, {"model_config.yaml": config.encode(), "model_weights.ckpt": _torch_bytes({"w": [1.0]})})


def nemo_benign(path: Path, canary: Path) -> None:
    config = "_target_: torch.nn.Linear\nin_features: 2\nout_features: 1\n"
    import torch

    weights = _torch_bytes(torch.nn.Linear(2, 1).state_dict())
    _tar(path, {"model_config.yaml": config.encode(), "model_weights.ckpt": weights})


# -- GGUF chat templates --------------------------------------------------------------------------------

_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _gguf(path: Path, template: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_chat_template(template)
    writer.add_token_list(["<s>", "</s>", "hello"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_ssti(path: Path, canary: Path) -> None:
    # The CVE-2024-34359 shape: walk from a literal to os through __class__/__subclasses__/__globals__.
    payload = (
        "{% for c in ().__class__.__base__.__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
        "{{ c()._module.__builtins__['__import__']('os').system(" + repr(_touch(canary)) + ") }}"
        "{% endif %}{% endfor %}"
    )
    _gguf(path, _CHATML + payload)


def gguf_attr_filter(path: Path, canary: Path) -> None:
    payload = "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system(" + repr(_touch(canary)) + ") }}"
    _gguf(path, _CHATML + payload)


def gguf_benign(path: Path, canary: Path) -> None:
    _gguf(path, _CHATML)


# -- Keras -----------------------------------------------------------------------------------------------


def _keras_model(canary: Path | None) -> object:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    layers: list[object] = [keras.Input((2,))]
    if canary is not None:
        command = _touch(canary)
        layers.append(keras.layers.Lambda(lambda x: (__import__("os").system(command) and x) or x))
    layers += [keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def _keras_save(path: Path, canary: Path | None) -> None:
    model = _keras_model(canary)
    if canary is not None and canary.exists():
        canary.unlink()  # building the model traced the lambda once; only loading must fire it now
    model.save(str(path))  # type: ignore[attr-defined]


def keras_lambda(path: Path, canary: Path) -> None:
    _keras_save(path, canary)


def keras_benign(path: Path, canary: Path) -> None:
    _keras_save(path, None)


def keras_module_sink(path: Path, canary: Path) -> None:
    """A .keras whose config names os.system by module and class_name (the CVE-2025-1550 shape)."""
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"module": "os", "class_name": "system", "config": {}, "registered_name": None},
            ],
        },
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))


# -- safetensors -----------------------------------------------------------------------------------------


def _safetensors_raw(header: dict[str, object], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_benign(path: Path, canary: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.int64)}, str(path))


def safetensors_overlap(path: Path, canary: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path.write_bytes(_safetensors_raw(header, bytes(12)))


def safetensors_gap(path: Path, canary: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path.write_bytes(_safetensors_raw(header, bytes(12)))


def safetensors_bad_dtype(path: Path, canary: Path) -> None:
    header = {"a": {"dtype": "PY_OBJECT", "shape": [1], "data_offsets": [0, 8]}}
    path.write_bytes(_safetensors_raw(header, bytes(8)))


def safetensors_huge_header(path: Path, canary: Path) -> None:
    path.write_bytes(struct.pack("<Q", 1 << 40) + b'{"a": 1}')


# -- ONNX ------------------------------------------------------------------------------------------------


def _onnx(path: Path, location: str) -> None:
    from onnx import TensorProto, helper, save

    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    node = helper.make_node("Identity", ["W"], ["y"])
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    save(helper.make_model(helper.make_graph([node], "g", [], [output], initializer=[tensor])), str(path))


def onnx_traversal(path: Path, canary: Path) -> None:
    (path.parent.parent / "secret.bin").write_bytes(bytes(16))
    _onnx(path, "../secret.bin")


def onnx_absolute(path: Path, canary: Path) -> None:
    (path.parent / "elsewhere.bin").write_bytes(bytes(16))
    _onnx(path, str(path.parent / "elsewhere.bin"))


def onnx_benign(path: Path, canary: Path) -> None:
    (path.parent / "weights.bin").write_bytes(bytes(16))
    _onnx(path, "weights.bin")


def onnx_torch_export(path: Path, canary: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    torch.onnx.export(model, (torch.zeros(1, 2),), str(path), dynamo=False)


def onnx_custom_domain(path: Path, canary: Path) -> None:
    from onnx import TensorProto, helper, save

    node = helper.make_node("FusedThing", ["x"], ["y"], domain="com.vendor.ops")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.vendor.ops", 1)]
    save(helper.make_model(graph, opset_imports=opsets), str(path))


# -- executables and remote code -------------------------------------------------------------------------


def script_model(path: Path, canary: Path) -> None:
    path.write_text(f"#!/bin/sh\n{_touch(canary)}\n")
    path.chmod(0o755)


def config_auto_map(path: Path, canary: Path) -> None:
    config = {
        "model_type": "x",
        "auto_map": {"AutoModel": "modeling_x.XModel", "AutoConfig": "configuration_x.XConfig"},
    }
    _write(path, json.dumps(config))


def config_auto_map_reaching_sinks(path: Path, canary: Path) -> None:
    config_auto_map(path, canary)
    _write(
        path.parent / "modeling_x.py",
        "import os\n\n\nclass XModel:\n    def __init__(self):\n        os.system('id')\n",
    )
    _write(path.parent / "configuration_x.py", "class XConfig:\n    pass\n")


def config_benign(path: Path, canary: Path) -> None:
    _write(path, json.dumps({"model_type": "bert", "hidden_size": 8, "architectures": ["BertModel"]}))


CASES: tuple[FormatCase, ...] = (
    FormatCase("yaml-python-apply", "config.yaml", "yaml", "malicious", yaml_apply, ("PW100",)),
    FormatCase("yaml-tag-directive", "conf.yml", "yaml", "malicious", yaml_tag_alias, ("PW100",)),
    FormatCase("yaml-benign-tuple", "plain.yaml", "yaml", "safe", yaml_benign),
    FormatCase("hydra-target-os-system", "train.yaml", "hydra", "malicious", hydra_target, ("PW100",)),
    FormatCase("hydra-partial-posix-system", "part.yaml", "hydra", "malicious", hydra_partial, ("PW100",)),
    FormatCase("hydra-benign-model", "model.yaml", "hydra", "safe", hydra_benign),
    FormatCase("nemo-target", "model.nemo", "nemo", "malicious", nemo_target, ("PW100",)),
    FormatCase("nemo-benign", "good.nemo", "nemo", "safe", nemo_benign),
    FormatCase("gguf-template-subclasses-CVE-2024-34359", "evil.gguf", "jinja", "malicious", gguf_ssti, ("PW403",)),
    FormatCase("gguf-template-attr-filter", "attr.gguf", "jinja", "malicious", gguf_attr_filter, ("PW403",)),
    FormatCase("gguf-benign-chatml", "chat.gguf", "jinja", "safe", gguf_benign),
    FormatCase("keras-lambda", "lambda.keras", "keras", "malicious", keras_lambda, ("PW400",)),
    FormatCase("keras-h5-lambda", "lambda.h5", "keras", "malicious", keras_lambda, ("PW400",)),
    FormatCase("keras-benign", "dense.keras", "keras", "safe", keras_benign),
    FormatCase("keras-h5-benign", "dense.h5", "keras", "safe", keras_benign),
    # Keras 3.9+ refuses modules outside its own packages; releases before the CVE-2025-1550 fix imported them.
    FormatCase(
        "keras-module-os-system-CVE-2025-1550",
        "mod.keras",
        "keras",
        "malicious",
        keras_module_sink,
        ("PW100",),
        fires=False,
    ),
    FormatCase("safetensors-benign", "model.safetensors", "safetensors", "safe", safetensors_benign),
    FormatCase(
        "safetensors-overlap",
        "overlap.safetensors",
        "safetensors",
        "suspicious",
        safetensors_overlap,
        ("PW408",),
        fires=False,
    ),
    FormatCase(
        "safetensors-gap", "gap.safetensors", "safetensors", "suspicious", safetensors_gap, ("PW408",), fires=False
    ),
    FormatCase(
        "safetensors-bad-dtype",
        "dtype.safetensors",
        "safetensors",
        "suspicious",
        safetensors_bad_dtype,
        ("PW408",),
        fires=False,
    ),
    FormatCase(
        "safetensors-huge-header",
        "huge.safetensors",
        "safetensors",
        "suspicious",
        safetensors_huge_header,
        ("PW408",),
        fires=False,
    ),
    # onnx >= 1.16 refuses these paths itself; older onnx and other runtimes read them.
    FormatCase(
        "onnx-external-traversal", "model/trav.onnx", "onnx", "malicious", onnx_traversal, ("PW404",), fires=False
    ),
    FormatCase("onnx-external-absolute", "model/abs.onnx", "onnx", "malicious", onnx_absolute, ("PW404",), fires=False),
    FormatCase("onnx-benign-external", "model/ok.onnx", "onnx", "safe", onnx_benign),
    FormatCase("onnx-benign-torch-export", "export.onnx", "onnx", "safe", onnx_torch_export),
    # A custom operator domain is listed (info): its kernels come from a library the loading process registers.
    FormatCase("onnx-custom-domain", "custom.onnx", "onnx", "safe", onnx_custom_domain, ("PW405",)),
    FormatCase("script-posing-as-model", "model.bin", "exec", "malicious", script_model, ("PW406",)),
    # auto_map alone is information (the user opts in with trust_remote_code); files beside it that reach
    # dangerous names make it suspicious.
    FormatCase("config-auto-map", "config.json", "none", "safe", config_auto_map, ("PW407",), fires=False),
    FormatCase(
        "config-auto-map-sinks",
        "config.json",
        "none",
        "suspicious",
        config_auto_map_reaching_sinks,
        ("PW407",),
        fires=False,
    ),
    FormatCase("config-benign", "plain/config.json", "none", "safe", config_benign),
)
