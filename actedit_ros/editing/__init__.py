"""Goal-image prediction with InstructPix2Pix / EditAction models (no ROS imports)."""
from .loading import EditActionComponents, ModelLoadError, load_components
from .model_store import default_model_is_placeholder, resolve_model_path
from .pipeline import GoalPrediction, GoalPredictor

__all__ = ["EditActionComponents", "GoalPrediction", "GoalPredictor", "ModelLoadError", "default_model_is_placeholder",
           "load_components", "resolve_model_path"]
