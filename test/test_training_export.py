"""actedit-train's model export (training/models.py) as other processes see it while training goes on."""
import json


def test_export_replaces_component_folders_instead_of_rewriting_files_in_place(tmp_path):
    """A reader that memory-maps the exported weights while training exports again keeps valid files (rewriting
    them in place killed such a reader with SIGBUS)."""
    import os

    import torch
    from safetensors import safe_open

    from actedit_ros.editing import GoalPredictor
    from actedit_ros.editing.tiny import make_tiny_model
    from actedit_ros.training.models import export_model

    source = make_tiny_model(tmp_path / "tiny", resolution=32)
    components = GoalPredictor.from_pretrained(str(source), device="cpu").components
    out = tmp_path / "exported"
    index = json.loads((source / "model_index.json").read_text())
    export_model(out, components.unet, components, index, "epsilon", 32)
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    reader = safe_open(str(weights), framework="pt")  # memory-maps the file
    before = os.stat(weights).st_ino
    with torch.no_grad():
        next(components.unet.parameters()).add_(1.0)
    export_model(out, components.unet, components, index, "epsilon", 32)
    assert os.stat(weights).st_ino != before  # a new file, the old one left to its readers
    key = next(iter(reader.keys()))
    assert torch.isfinite(reader.get_tensor(key)).all()
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))]  # nothing left behind
