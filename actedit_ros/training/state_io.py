"""Training state without pickle: optimizer state as safetensors, everything else that is not a tensor as JSON.

The one place the project's trainers (``actedit-train``, the autoencoder stages of :mod:`actedit_ros.world.vae_training`,
``actedit-train-progress``) turn optimizer and schedule state into files and back. Nothing here calls ``torch.load``
or ``pickle``: a checkpoint can be read without running code from it.
"""
from __future__ import annotations

import json
from pathlib import Path


def optimizer_tensors(optimizer) -> dict:
    """The per-parameter state of ``optimizer`` (Adam's moments and step counts) as ``{"<param index>.<key>": tensor}``.

    A non-tensor entry (a plain step count) becomes a 0-d tensor.
    """
    import torch

    return {f"{index}.{key}": (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu().contiguous()
            for index, entry in optimizer.state_dict()["state"].items() for key, value in entry.items()}


def load_optimizer_tensors(optimizer, tensors: dict, param_groups: list | None = None, source: str = "") -> None:
    """Puts :func:`optimizer_tensors`'s output back into ``optimizer``; its hyper-parameters (learning rates, betas)
    from ``param_groups`` when given, else its own are kept. ``source`` names the file in errors."""
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the order state_dict numbers them
    state: dict = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        index = int(index)
        # torch checks only the number of parameters: a moment of another shape would fail at the next step.
        if index >= len(params) or (value.dim() > 0 and value.shape != params[index].shape):
            shape = tuple(params[index].shape) if index < len(params) else "no such parameter"
            raise ValueError(f"{source or 'optimizer state'} does not fit this optimizer ({name} has shape "
                             f"{tuple(value.shape)}, parameter {index}: {shape}): was it written for another model "
                             f"or set of trainable parameters?")
        state.setdefault(index, {})[key] = value
    groups = param_groups if param_groups is not None else optimizer.state_dict()["param_groups"]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise ValueError(f"{source or 'optimizer state'} does not fit this optimizer ({err}): was it written for "
                         f"another model or set of trainable parameters?") from err


def save_optimizer(optimizer, path: Path) -> None:
    """Optimizer state as one safetensors file: the tensors, and the hyper-parameters as JSON in its metadata."""
    from safetensors.torch import save_file

    save_file(optimizer_tensors(optimizer), str(path),
              metadata={"param_groups": json.dumps(optimizer.state_dict()["param_groups"])})


def load_optimizer(optimizer, path: Path) -> None:
    """Restores what :func:`save_optimizer` wrote (tensors and hyper-parameters)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "param_groups" not in metadata:
            raise ValueError(f"{path} has no optimizer hyper-parameters (metadata 'param_groups'): not written by "
                             f"save_optimizer")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    load_optimizer_tensors(optimizer, tensors, json.loads(metadata["param_groups"]), source=str(path))


def write_json_state(state: dict, path: Path) -> None:
    """A ``state_dict()`` of plain numbers, lists and strings (an LR schedule, an AMP grad scaler) as JSON.

    Floats round-trip exactly; anything else (a tensor, a callable) is refused by name rather than pickled.
    """
    try:
        text = json.dumps(state, indent=2, allow_nan=True)
    except TypeError as err:
        raise TypeError(f"cannot write {path.name} as JSON: {err}") from err
    Path(path).write_text(text + "\n")


def read_json_state(path: Path) -> dict:
    return json.loads(Path(path).read_text())
