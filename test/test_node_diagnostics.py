"""/diagnostics of the goal node over real rclpy (Fast DDS): the keys rqt_robot_monitor shows, and the level going
WARN when the camera stops while a goal is active (and back to OK when frames come again)."""
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from std_srvs.srv import Trigger

from actedit_ros.ros.diagnostics import STATUS_NAME
from node_harness import GOOD_INSTRUCTION, ensure_goal, frame, model_dir, ros, wait_for  # noqa: F401 - fixtures

KEYS = ["model path", "device", "dtype", "progress scorer", "progress model path", "camera rate (Hz)",
        "frame age (s)", "scoring rate (Hz)", "dropped frames", "last prediction time (s)", "last prediction at",
        "goal id", "instruction", "reached", "out-of-domain warnings", "last error"]


class Listener:
    def __init__(self, planner):
        self.lock = threading.Lock()
        self.statuses: list[DiagnosticStatus] = []
        self.sub = planner.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array, 10)

    def _on_array(self, msg):
        with self.lock:
            self.statuses += [s for s in msg.status if s.name == STATUS_NAME]

    def next(self, condition=lambda status: True, what="a /diagnostics status"):
        """The first status that arrives from now on and meets ``condition``."""
        with self.lock:
            seen = len(self.statuses)

        def find():
            with self.lock:
                return next((s for s in self.statuses[seen:] if condition(s)), None)
        return wait_for(find, what)


def values(status):
    return {kv.key: kv.value for kv in status.values}


def test_status_names_node_model_and_keys(ros):
    node, planner, _ = ros
    status = Listener(planner).next()
    assert status.hardware_id == node.get_fully_qualified_name() == "/goal_node"
    kv = values(status)
    assert list(kv) == KEYS
    assert kv["model path"] == str(node.predictor.components.model_path)
    assert kv["device"] == "cpu" and kv["dtype"] == "float32" and kv["progress scorer"] == "pixel"
    assert kv["progress model path"].endswith(".safetensors")


def test_goal_camera_rate_and_stale_warning(ros):
    node, planner, _ = ros
    listener = Listener(planner)
    response = ensure_goal(ros, 300)
    seen = listener.next(lambda s: values(s)["goal id"] == response.goal_id, "a status with the new goal")
    kv = values(seen)
    assert kv["instruction"] == GOOD_INSTRUCTION
    assert float(kv["last prediction time (s)"]) > 0 and kv["last prediction at"] != "n/a"

    # Camera streaming at about 10 Hz while the goal is active: OK, with camera and scoring rates above zero.
    stop = threading.Event()

    def stream():
        sec = 301
        while not stop.wait(0.1):
            planner.send_frame(frame(sec % 7), sec)
            sec += 1
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        live = listener.next(lambda s: s.level == DiagnosticStatus.OK and values(s)["camera rate (Hz)"] != "n/a"
                             and float(values(s)["camera rate (Hz)"]) > 1
                             and float(values(s)["scoring rate (Hz)"]) > 1, "OK with live camera and scoring rates")
        assert float(values(live)["frame age (s)"]) < node.param("stale_timeout")
    finally:
        stop.set()
        streamer.join(5)

    # The camera stops: WARN naming the stale camera, frame age past stale_timeout.
    stale = listener.next(lambda s: s.level == DiagnosticStatus.WARN, "WARN once the camera stops")
    assert "camera stale" in stale.message
    assert float(values(stale)["frame age (s)"]) > node.param("stale_timeout")
    assert values(stale)["goal id"] == response.goal_id

    # Without a goal, an old frame is no problem: back to OK.
    cleared_call = planner.clear.call_async(Trigger.Request())
    wait_for(cleared_call.done, "the clear_goal response")
    cleared = listener.next(lambda s: values(s)["goal id"] == "", "a status without the goal")
    assert cleared.level == DiagnosticStatus.OK, cleared.message


def test_bad_request_shows_as_last_error(ros):
    _, planner, _ = ros
    listener = Listener(planner)
    response = planner.call("")
    assert not response.success
    status = listener.next(lambda s: values(s)["last error"] == response.message, "the refusal as last error")
    assert status.level != DiagnosticStatus.ERROR  # a bad request is the caller's problem, not the node's


def test_build_status_levels_out_of_domain_and_internal_errors():
    """The plain-Python part: out-of-domain warnings of the current goal's prediction WARN, a failed prediction
    (the node's own exception) is ERROR until a prediction succeeds, rates are counted over the window."""
    import numpy as np

    from actedit_ros.ros.diagnostics import ERROR, OK, WARN, NodeStats, build_status
    from actedit_ros.ros.node_state import ActiveGoal

    stats = NodeStats()
    goal = ActiveGoal(goal_id="goal-1", instruction=GOOD_INSTRUCTION, start_rgb=np.zeros((8, 8, 3), np.uint8),
                      goal_rgb=np.zeros((8, 8, 3), np.uint8), scorer=None)

    def status(now, goal=goal):
        return build_status(stats=stats, now=now, frame_received=now - 0.1, goal=goal, stale_timeout=1.0,
                            dropped_frames=3, model={"model path": "m"}, placeholder_model=False)

    level, message, kv = status(100.0)
    assert (level, message) == (OK, "tracking goal") and dict(kv)["camera rate (Hz)"] == "n/a"
    stats.frames_received, stats.frames_scored = 20, 10
    level, _, kv = status(102.0)
    assert dict(kv)["camera rate (Hz)"] == "10.00" and dict(kv)["scoring rate (Hz)"] == "5.00"
    assert dict(kv)["dropped frames"] == "3"

    stats.record_prediction(1.5, "goal-1", ["the start image looks unlike the training data"])
    level, message, kv = status(103.0)
    assert level == WARN and "out of domain" in message
    assert dict(kv)["out-of-domain warnings"] == "the start image looks unlike the training data"
    assert status(103.5, goal=None)[0] == OK  # warnings of a goal that is gone do not count

    stats.record_error("prediction failed (RuntimeError): boom", internal=True)
    level, message, kv = status(104.0)
    assert level == ERROR and "boom" in message and dict(kv)["last error"].endswith("boom")
    stats.record_prediction(1.0, "goal-2", [])
    assert status(105.0, goal=None)[0] == OK
