"""Launch the actedit_ros goal node with its parameters from config/goal_node.yaml.

    ros2 launch actedit_ros goal_node.launch.py image_topic:=/camera/color/image_raw device:=cuda
    ros2 launch actedit_ros goal_node.launch.py --show-args     # every argument with its description
    ros2 launch actedit_ros goal_node.launch.py managed:=true   # the lifecycle node, configured and activated
    ros2 launch actedit_ros goal_node.launch.py \
        fastdds_profile:=$(ros2 pkg prefix actedit_ros)/share/actedit_ros/config/fastdds_large_frames.xml

Every node-parameter argument defaults to "" meaning "keep the value from config_file"; give a value to override it.
When the node exits on its own with a non-zero code (e.g. model_path names no model), the launch stops and
`ros2 launch` exits non-zero too, so scripts and supervisors see the failure.
"""
import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare

# (node parameter, type, description). test/test_launch.py checks these against the node's declared parameters.
LAUNCH_ARGUMENTS = (
    ("model_path", "str", "Diffusers-format model directory (safetensors only); empty: the embedded default model."),
    ("device", "str", "Where the model runs: auto, cpu, cuda or cuda:N (half precision on GPU)."),
    ("dtype", "str", "Model precision: float32, float16 or bfloat16 (default: float16 on GPU, float32 on CPU)."),
    ("scheduler", "str", "Diffusion sampler: auto (the model's own), euler_ancestral, ddim, euler or dpm_solver."),
    ("steps", "int", "Denoising steps per goal prediction (more: slower, finer)."),
    ("text_guidance", "float", "Guidance scale on the instruction."),
    ("image_guidance", "float", "Guidance scale on the start image (higher keeps more of the scene)."),
    ("resolution", "int", "Model working resolution in pixels; 0 = the model's own."),
    ("seed", "int", "Sampler seed used when a request's seed is -1."),
    ("goal_mode", "str", "Goal image: plain (the editor's output) or composite (the start frame outside the change)."),
    ("goal_refiner", "str", "auto: the model's goal refiner (when it ships one) redraws the goal sharp; off: not."),
    ("spelling", "str", "correct: typos in instructions are corrected before the text encoder; as_written: not."),
    ("torch_threads", "int", "CPU threads for torch; 0 = all cores but one (kept for camera callbacks)."),
    ("image_topic", "str", "Camera topic, sensor_msgs/Image."),
    ("compressed_image_topic", "str", "Camera topic, sensor_msgs/CompressedImage (JPEG/PNG)."),
    ("qos_reliability", "str", "Camera subscription reliability: best_effort (sensor data) or reliable."),
    ("max_image_side", "int", "Larger frames/request images are downscaled to this longer side; 0 = no limit."),
    ("progress_scorer", "str", "Progress scorer: learned (reads progress toward predicted goals) or pixel."),
    ("progress_model_path", "str", "Learned progress model (.safetensors); empty = the shipped one."),
    ("reached_threshold", "float", "Progress at which a goal counts as reached, in [0, 1]."),
    ("stale_timeout", "float", "Seconds without a camera frame before progress is flagged stale."),
    ("action_new_goal", "str", "A new reach_visual_goal goal while one is active: preempt (old aborted) or reject."),
    ("action_max_stale", "float", "Seconds without a camera frame before a tracked action goal is aborted; 0 = never."),
)
_CASTS = {"str": str, "int": int, "float": float}
_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number"}


class NodeExitedError(RuntimeError):
    """Raised in the launch when the goal node exits with an error; launch then shuts down and returns 1."""


def _fail_on_error_exit(event, context):
    """OnProcessExit handler: a non-zero exit the launch did not ask for fails the launch.

    A Shutdown event alone would end `ros2 launch` with 0; an exception raised while handling an event is what makes
    LaunchService.run() return 1 (and shut everything down). Exits during the launch's own shutdown (Ctrl-C) pass.
    """
    if event.returncode != 0 and not context.is_shutdown:
        raise NodeExitedError(f"{event.process_name} exited with code {event.returncode} "
                              "(its error is printed above)")


def _node(context):
    overrides = {}
    for name, kind, _ in LAUNCH_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value == "":
            continue  # keep the config file's value
        try:
            overrides[name] = _CASTS[kind](value)
        except ValueError as err:
            raise ValueError(f"launch argument {name}:={value!r} must be {_KIND_NAMES[kind]}") from err
    profile = LaunchConfiguration("fastdds_profile").perform(context)
    common = dict(
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config_file"), overrides],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
        additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else None,
    )
    managed = LaunchConfiguration("managed").perform(context).lower()
    if managed not in ("true", "false"):
        raise ValueError(f"launch argument managed:={managed!r} must be true or false")
    if managed == "false":
        node = Node(package="actedit_ros", executable="goal_node", **common)
        return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_fail_on_error_exit))]
    node = LifecycleNode(package="actedit_ros", executable="goal_lifecycle_node", **common)
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_fail_on_error_exit))] + \
        _drive_to_active(node)


def _configure_failed(context):
    """OpaqueFunction run when configuring ended in unconfigured: fail the launch as a failed start-up does."""
    raise NodeExitedError("configure failed, the node stayed unconfigured (its error is printed above)")


def _drive_to_active(node) -> list:
    """configure now; activate once configuring has ended in inactive (launch_ros's lifecycle events).

    A configure that fails (e.g. model_path names no model) ends the launch with exit status 1, as a plain node
    that exits at start-up does; otherwise the launch would keep waiting on a node that never becomes active.
    """
    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[transition(lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)]))
    failed = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="unconfigured",
        entities=[OpaqueFunction(function=_configure_failed)]))
    return [activate, failed, transition(lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    default_config = PathJoinSubstitution([FindPackageShare("actedit_ros"), "config", "goal_node.yaml"])
    arguments = [
        DeclareLaunchArgument("config_file", default_value=default_config,
                              description="Parameter file of the node (defaults for every parameter)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
        DeclareLaunchArgument("node_name", default_value="goal_node",
                              description="Name of the node (its services and topics are ~/predict_goal, ...)."),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level: debug, info, warn, ..."),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: start the managed (lifecycle) node goal_lifecycle_node and drive it "
                                          "to active (configure: the model loads; activate: topics and services "
                                          "come up); false: the plain goal_node."),
        DeclareLaunchArgument("fastdds_profile", default_value="",
                              description="Fast DDS XML profile for the node's participant (sets "
                                          "FASTDDS_DEFAULT_PROFILES_FILE), e.g. the package's "
                                          "config/fastdds_large_frames.xml; empty: Fast DDS defaults. Frames over "
                                          "512 KiB need it on the camera driver's side above all."),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=f"{description} Empty: value from config_file.")
        for name, _, description in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
