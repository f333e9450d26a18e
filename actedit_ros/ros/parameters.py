"""The goal node's ROS parameters: name, default (which fixes the type), description and constraints.

``config/goal_node.yaml`` and the launch file's arguments are kept in step with :data:`NODE_PARAMETERS` by
``test/test_launch.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


@dataclass(frozen=True)
class NodeParameter:
    """One declared parameter: its default (which fixes its type), description and constraints."""

    name: str
    default: object
    description: str
    read_only: bool = False  # fixed at startup (model, topics, QoS)
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    # The choices a boolean stands for, (for false, for true): rcl and ros2 param read a bare off/on/true/false on
    # the command line or in YAML as a boolean, so a choice parameter with an off value also takes booleans.
    bool_choices: tuple[str, str] | None = None

    def choice(self, value):
        """The value as one of the choices where a boolean stands for one; anything else as it is."""
        if self.bool_choices and isinstance(value, bool):
            return self.bool_choices[int(value)]
        return value

    def descriptor(self) -> ParameterDescriptor:
        constraints = f"one of: {', '.join(self.choices)}" if self.choices else ""
        if self.bool_choices:
            constraints += f" (or false = {self.bool_choices[0]}, true = {self.bool_choices[1]})"
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only,
                                         additional_constraints=constraints,
                                         dynamic_typing=self.bool_choices is not None)
        if self.int_range:
            descriptor.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)]
        return descriptor


# Defaults here and in config/goal_node.yaml are kept equal by test/test_launch.py.
NODE_PARAMETERS: tuple[NodeParameter, ...] = (
    NodeParameter("model_path", "", "Diffusers-format EditAction/InstructPix2Pix model directory (safetensors "
                  "weights only). Empty: the embedded default model.", read_only=True),
    NodeParameter("device", "auto", "Where the model runs: auto (CUDA when available), cpu, cuda or cuda:N.",
                  read_only=True),
    NodeParameter("dtype", "", "Model precision: empty = float16 on GPU, float32 on CPU; or float32, float16, "
                  "bfloat16.", read_only=True),
    NodeParameter("scheduler", "auto", "Diffusion sampler: auto (the model's own), euler_ancestral, ddim, euler or "
                  "dpm_solver.", read_only=True, choices=("auto", "euler_ancestral", "ddim", "euler", "dpm_solver")),
    NodeParameter("torch_threads", 0, "CPU threads torch may use (torch.set_num_threads); 0 = all cores but one, "
                  "which stays free for camera and progress callbacks (torch competing with them for every core "
                  "slows a CPU prediction down many times).", read_only=True, int_range=(0, 256)),
    NodeParameter("steps", 20, "Denoising steps per prediction.", int_range=(1, 1000)),
    NodeParameter("text_guidance", 7.5, "Classifier-free guidance scale on the instruction.",
                  float_range=(0.0, 50.0)),
    NodeParameter("image_guidance", 1.5, "Guidance scale on the start image (how closely the goal keeps the scene).",
                  float_range=(0.0, 50.0)),
    NodeParameter("resolution", 0, "Working resolution in pixels: the model works at about resolution x resolution pixels, "
                  "aspect kept; 0 = the model's own.",
                  read_only=True, int_range=(0, 4096)),
    NodeParameter("seed", 0, "Sampler seed used when a request's seed is -1.", int_range=(0, 2**31 - 1)),
    NodeParameter("goal_mode", "composite", "What the goal image holds: plain (the editor's output, upscaled to the "
                  "camera's size) or composite (the start frame itself outside the change the editor predicts, "
                  "so the goal is as sharp as the camera there). Applies to new predictions.",
                  choices=("plain", "composite")),
    NodeParameter("goal_refiner", "auto", "auto: the decoded goal is redrawn at twice the working size by the "
                  "model's goal refiner when the model folder ships one (goal_refiner/; the embedded default does), "
                  "sharp where the scene is unchanged; off: the decoded goal as it is. Applies to new predictions.",
                  choices=("auto", "off"), bool_choices=("off", "auto")),
    NodeParameter("spelling", "correct", "correct: typos in an instruction (words that are neither English nor "
                  "in the text encoder's vocabulary) are corrected to the nearest English word before the text "
                  "encoder reads them, and the response's message says how it was read; as_written: the text as it is. "
                  "Applies to new predictions.", choices=("correct", "as_written"),
                  bool_choices=("as_written", "correct")),
    NodeParameter("image_topic", "~/image", "Camera topic (sensor_msgs/Image). Also remappable as ~/image.",
                  read_only=True),
    NodeParameter("compressed_image_topic", "", "Camera topic (sensor_msgs/CompressedImage, JPEG/PNG); empty: "
                  "not subscribed.", read_only=True),
    NodeParameter("qos_reliability", "best_effort", "Camera subscription reliability: best_effort (sensor-data "
                  "QoS, matches every publisher) or reliable. Depth is always 1 (latest frame only).",
                  read_only=True, choices=("best_effort", "reliable")),
    NodeParameter("progress_scorer", "learned", "How live frames are scored for progress toward the goal: learned "
                  "(a small network trained to read progress toward predicted, imperfect goals) or pixel (the "
                  "hand-made pixel-wise scorer, which needs a goal that matches the finished scene closely). "
                  "Applies to new goals.", choices=("learned", "pixel")),
    NodeParameter("progress_model_path", "", "Learned progress model (.safetensors written by "
                  "actedit-train-progress, or its folder). Empty: the one that ships with the package.",
                  read_only=True),
    NodeParameter("reached_threshold", 0.8, "Progress above which a goal counts as reached (for goals predicted "
                  "after a change).", float_range=(0.0, 1.0)),
    NodeParameter("stale_timeout", 1.0, "Seconds without a camera frame after which progress is republished "
                  "flagged stale.", float_range=(0.01, 3600.0)),
    NodeParameter("max_image_side", 1024, "Camera frames and request images with a longer side are downscaled to "
                  "this many pixels before prediction and scoring; 0 = no limit.", read_only=True,
                  int_range=(0, 100000)),
    NodeParameter("action_new_goal", "preempt", "What a new reach_visual_goal action goal does while another is "
                  "active: preempt (the old one is aborted with reason PREEMPTED, replaced by a newer goal) or "
                  "reject (the new one is refused). An adopted predict_goal call always replaces the action's goal.",
                  choices=("preempt", "reject")),
    NodeParameter("action_max_stale", 10.0, "Seconds without a camera frame, while a reach_visual_goal goal is "
                  "tracked, after which it is aborted with reason CAMERA_STALE (a goal's own max_stale wins); "
                  "0 = never.", float_range=(0.0, 3600.0)),
)
PARAMETERS_BY_NAME: dict[str, NodeParameter] = {parameter.name: parameter for parameter in NODE_PARAMETERS}
