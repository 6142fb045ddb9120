"""Load one model file, by format, with the trust rules applied.

ONNX files come back as a checked ``onnx.ModelProto``. PyTorch files come back
as an ``nn.Module`` in eval mode, whichever way they were saved:

| storage      | how it loads                                   | needs trust |
|--------------|------------------------------------------------|-------------|
| state_dict   | ``torch.load(weights_only=True)`` + registry   | no          |
| torchscript  | ``torch.jit.load``                             | yes         |
| pickle       | ``torch.load(weights_only=False)``             | yes         |

TorchScript and whole pickles can run code when loaded, so they load only
from a trusted source (the local models root, or an operator's opt-in).
ONNX graphs with control flow (``Loop``, ``Scan``, ``If``) load only from a
trusted source too: a loop can be made to run without end, and no view of a
small CNN needs one. Every run is under a deadline all the same.
Heavy libraries are imported on first use so that importing quantcore is cheap.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantcore import settings
from quantcore.archives import measure_zip
from quantcore.errors import (
    InvalidModelError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelTooLargeError,
    PathNotAllowedError,
    QuantcoreError,
    UnsafeModelError,
)
from quantcore.load.keys import ModelFormat
from quantcore.sizes import limit_megabytes

if TYPE_CHECKING:
    import onnx
    from torch import nn

logger = logging.getLogger(__name__)

OPT_IN_HINT = (
    f"start the app with --trust-remote-models (or set {settings.TRUST_REMOTE_ENV}=1) "
    "only if you trust whoever published this file"
)
# One record per tensor storage plus a few: far more than any model here has.
TORCH_MAX_MEMBERS = 65_000
# Ops that run a subgraph a number of times the graph decides (or choose one): no CNN view needs them.
CONTROL_FLOW_OPS = frozenset({"Loop", "Scan", "If", "SequenceMap"})
# Keys under which converters commonly nest a state_dict or a whole module.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")


class Storage(StrEnum):
    """How a PyTorch file was saved."""

    STATE_DICT = "state_dict"
    TORCHSCRIPT = "torchscript"
    PICKLE = "pickle"


@dataclass(frozen=True)
class LoadedTorchModel:
    module: nn.Module
    storage: Storage


def check_file(path: Path, *, max_bytes: int | None = None) -> int:
    """The size of ``path`` after checking it is a readable regular file under the cap.

    Raises:
        ModelNotFoundError: missing, not a regular file, or cannot be opened (permissions).
        ModelTooLargeError: over ``max_bytes`` (default: the configured cap).
    """
    limit = settings.current().max_model_bytes if max_bytes is None else max_bytes
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelNotFoundError(f"{path.name}: {exc.strerror or 'cannot be read'}") from None
    if not path.is_file():
        raise ModelNotFoundError(f"{path.name}: not a regular file")
    if stat.st_size == 0:
        raise InvalidModelError(f"{path.name}: the file is empty")
    if stat.st_size > limit:
        size, cap = f"{stat.st_size / 2**20:.1f}", limit_megabytes(limit)
        raise ModelTooLargeError(f"{path.name}: {size} MB is over the {cap} MB limit")
    try:  # said here, not as "not a valid ONNX file" by a loader that could not open it
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ModelNotFoundError(f"{path.name}: {exc.strerror or 'cannot be read'}") from None
    return stat.st_size


# --------------------------------------------------------------------------- ONNX


def load_onnx_model(
    path: str | os.PathLike[str], *, max_bytes: int | None = None, data_root: Path | None = None
) -> onnx.ModelProto:
    """Load and check an ONNX model.

    Args:
        path: the ``.onnx`` file.
        max_bytes: size cap for the file (default: the configured cap).
        data_root: folder that external data files must resolve into
            (default: the model's own folder).

    Returns:
        The checked ``onnx.ModelProto`` with any external data loaded.

    Raises:
        ModelNotFoundError, ModelTooLargeError, InvalidModelError,
        PathNotAllowedError: external data points outside ``data_root``.
    """
    import onnx
    from onnx import external_data_helper

    path = Path(path)
    check_file(path, max_bytes=max_bytes)
    folder = Path(os.path.realpath(path.parent))
    root = Path(os.path.realpath(data_root or folder))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        raise InvalidModelError(f"{path.name}: not a valid ONNX file ({type(exc).__name__})") from None
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        _check_external_data(path, location, folder=folder, root=root)
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
        onnx.checker.check_model(model, full_check=False)
    except QuantcoreError:
        raise
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(f"{path.name}: ONNX check failed: {first_line[:300]}") from None
    return model


def _check_external_data(model_path: Path, location: str, *, folder: Path, root: Path) -> None:
    """Refuse an external data file unless it is a regular file of ``root`` with no other hard links.

    A hard link inside the folder to a file elsewhere looks like any other file
    there, so external data with other links is refused (ONNX itself refuses it
    too, but only while reading it).
    """
    name = model_path.name
    try:
        target = Path(os.path.realpath(folder / location))
        inside = bool(location) and not os.path.isabs(location) and target.is_relative_to(root)
        stat = target.stat() if inside and target.exists() else None
    except (ValueError, OSError):  # NUL bytes, names too long for the file system
        raise PathNotAllowedError(f"{name}: an external data location is not a usable file name") from None
    if not inside:
        raise PathNotAllowedError(f"{name}: external data '{location}' points outside the model's folder")
    if stat is None or not target.is_file():
        raise InvalidModelError(f"{name}: external data '{location}' is missing or not a regular file")
    if stat.st_nlink > 1:
        raise PathNotAllowedError(
            f"{name}: external data '{location}' has other hard links, so it may be a file from elsewhere; "
            "copy it into the folder instead"
        )


def control_flow_ops(model: onnx.ModelProto) -> set[str]:
    """The control-flow ops anywhere in ``model``: its graph, every subgraph, and its local functions."""
    import onnx

    found: set[str] = set()
    pending = [list(model.graph.node), *(list(f.node) for f in model.functions)]
    while pending:
        for node in pending.pop():
            if node.op_type in CONTROL_FLOW_OPS:
                found.add(node.op_type)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    pending.append(list(attribute.g.node))
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    pending.extend(list(g.node) for g in attribute.graphs)
    return found


def refuse_control_flow(path: Path, model: onnx.ModelProto) -> None:
    """Refuse an untrusted graph with control flow, naming the ops.

    Raises:
        UnsafeModelError: the graph (or a subgraph or function of it) uses ``CONTROL_FLOW_OPS``.
    """
    ops = control_flow_ops(model)
    if ops:
        raise UnsafeModelError(
            f"{path.name}: refused — it uses control flow ({', '.join(sorted(ops))}), which can be made to run "
            f"without end, and this file comes from an untrusted source; the views here need no control flow. "
            f"{OPT_IN_HINT[0].upper()}{OPT_IN_HINT[1:]}"
        )


# ------------------------------------------------------------------------ PyTorch


def detect_storage(path: Path) -> Storage:
    """Tell a TorchScript archive from a ``torch.save`` file without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        # Legacy (pre-1.6) torch.save files are not zips; weights_only decides later.
        return Storage.STATE_DICT
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return Storage.TORCHSCRIPT
    return Storage.STATE_DICT


def _refuse(path: Path, what: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"{path.name}: refused — {what} can run code when loaded and this file comes from "
        f"an untrusted source; {OPT_IN_HINT}"
    )


def _find_state_dict(obj: Any) -> Mapping[str, Any] | None:
    import torch

    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) for k in obj) and any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in STATE_DICT_KEYS:
            nested = obj.get(key)
            if isinstance(nested, Mapping):
                found = _find_state_dict(nested)
                if found is not None:
                    return found
    return None


def _module_from_checkpoint(path: Path, checkpoint: Any) -> nn.Module:
    from quantcore.models import ARCHITECTURES, rebuild

    state_dict = _find_state_dict(checkpoint)
    if state_dict is None:
        raise InvalidModelError(f"{path.name}: holds no state_dict or model")
    arch = checkpoint.get("arch") if isinstance(checkpoint, Mapping) else None
    try:
        return rebuild(state_dict, arch if isinstance(arch, str) else None)[1]
    except LookupError:
        raise InvalidModelError(
            f"{path.name}: its state_dict fits no known architecture (known: {', '.join(ARCHITECTURES)})"
        ) from None


def _unpickle_trusted(path: Path) -> nn.Module:
    import torch
    from torch import nn

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"{path.name}: unpickling needs the Python package '{exc.name}', which is not installed"
        ) from None
    except AttributeError as exc:
        raise MissingDependencyError(
            f"{path.name}: unpickling needs a class that the installed packages do not define ({exc})"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]
    if isinstance(obj, nn.Module):
        return obj
    return _module_from_checkpoint(path, obj)


def _load_torch(path: Path, *, trusted: bool) -> LoadedTorchModel:
    import pickle

    import torch

    storage = detect_storage(path)
    if storage is Storage.TORCHSCRIPT:
        if not trusted:
            raise _refuse(path, "a TorchScript archive")
        # An open file, not the name: torch's C++ side cannot take a path that is not valid UTF-8.
        with open(path, "rb") as handle:
            return LoadedTorchModel(torch.jit.load(handle, map_location="cpu"), storage)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain containers: a whole pickle.
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise InvalidModelError(f"{path.name}: not a readable PyTorch file") from None
        if not trusted:
            raise _refuse(path, "a whole pickled module") from None
        return LoadedTorchModel(_unpickle_trusted(path), Storage.PICKLE)
    return LoadedTorchModel(_module_from_checkpoint(path, checkpoint), Storage.STATE_DICT)


def check_archive(path: Path, *, max_bytes: int | None = None) -> None:
    """Refuse a ``torch.save`` / TorchScript zip that would inflate past the cap, before torch opens it.

    ``check_file`` caps the bytes on disk; a zip's members may be deflated, so
    a megabyte can hold a gigabyte that ``torch.load`` would inflate. The
    members' declared sizes (what torch's reader allocates and holds them to)
    count against the same cap. Legacy (non-zip) files are not compressed.

    Raises:
        ModelTooLargeError: more than ``TORCH_MAX_MEMBERS`` members, or over the cap once inflated.
    """
    limit = settings.current().max_model_bytes if max_bytes is None else max_bytes
    with open(path, "rb") as handle:
        measure_zip(
            handle, max_members=TORCH_MAX_MEMBERS, max_bytes=limit, what=path.name, error=ModelTooLargeError,
            setting="QP_MAX_MODEL_MB",
        )  # fmt: skip


def load_torch_file(path: Path, *, trusted: bool, max_bytes: int | None = None) -> LoadedTorchModel:
    """Like ``load_pytorch_model`` but also says how the file was stored."""
    check_file(path, max_bytes=max_bytes)
    check_archive(path, max_bytes=max_bytes)
    try:
        loaded = _load_torch(path, trusted=trusted)
    except QuantcoreError:
        raise
    except Exception as exc:  # torch raises RuntimeError/EOFError/... on damaged archives
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(f"{path.name}: not a loadable PyTorch file ({message})") from None
    loaded.module.eval()
    return loaded


def load_pytorch_model(
    path: str | os.PathLike[str], *, trusted: bool = True, max_bytes: int | None = None
) -> nn.Module:
    """Load a PyTorch model file as a module in eval mode.

    Args:
        path: a ``.pt``/``.pth`` file: state_dict checkpoint, TorchScript archive,
            or whole pickled module / ``{"model": module}`` dict.
        trusted: whether the file's source may run code (TorchScript, pickles).
        max_bytes: size cap (default: the configured cap).

    Raises:
        ModelNotFoundError, InvalidModelError,
        ModelTooLargeError: over the cap on disk, or once its zip members are inflated.
        UnsafeModelError: TorchScript or pickle from an untrusted source.
        MissingDependencyError: the pickle needs a package that is not installed.
    """
    return load_torch_file(Path(path), trusted=trusted, max_bytes=max_bytes).module


# ---------------------------------------------------------------- the registry


def _load_onnx_entry(path: Path, trusted: bool, data_root: Path | None) -> tuple[Any, str]:
    model = load_onnx_model(path, data_root=data_root)
    if not trusted:
        refuse_control_flow(path, model)
    return model, "onnx"


def _load_torch_entry(path: Path, trusted: bool, data_root: Path | None) -> tuple[Any, str]:
    loaded = load_torch_file(path, trusted=trusted)
    return loaded.module, str(loaded.storage)


# format -> loader returning (model, storage kind)
LOADERS: dict[ModelFormat, Callable[[Path, bool, Path | None], tuple[Any, str]]] = {
    ModelFormat.ONNX: _load_onnx_entry,
    ModelFormat.PYTORCH: _load_torch_entry,
}

__all__ = [
    "LOADERS",
    "LoadedTorchModel",
    "PathNotAllowedError",
    "Storage",
    "check_archive",
    "check_file",
    "control_flow_ops",
    "detect_storage",
    "load_onnx_model",
    "load_pytorch_model",
    "load_torch_file",
    "refuse_control_flow",
]
