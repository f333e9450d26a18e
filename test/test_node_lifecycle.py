"""The managed goal node (``goal_lifecycle_node``) over real rclpy / Fast DDS, driven through its lifecycle services
(lifecycle_msgs/srv/ChangeState and GetState) from a client node, as ``ros2 lifecycle set`` does."""
import gc
import weakref

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import GOOD_INSTRUCTION, WAIT, Planner, deliver_frame, frame, model_dir, wait_for  # noqa: F401
from rclpy.action import ActionClient
from rclpy.parameter import Parameter

from actedit_ros.action import ReachVisualGoal
from actedit_ros.ros.goal_lifecycle_node import GoalLifecycleNode
from actedit_ros.ros.goal_node import spin_in_background

NAME = "managed_node"


class Lifecycle:
    """What `ros2 lifecycle set/get` does: calls the node's ~/change_state and ~/get_state services."""

    def __init__(self, client_node, name):
        self.change = client_node.create_client(ChangeState, f"/{name}/change_state")
        self.get = client_node.create_client(GetState, f"/{name}/get_state")

    def set(self, transition_id: int) -> bool:
        assert self.change.wait_for_service(WAIT)
        future = self.change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        wait_for(future.done, f"transition {transition_id}", timeout=60)
        return future.result().success

    def state(self) -> int:
        assert self.get.wait_for_service(WAIT)
        future = self.get.call_async(GetState.Request())
        wait_for(future.done, "get_state")
        return future.result().current_state.id


@pytest.fixture
def managed(model_dir, request):
    overrides = getattr(request, "param", {})
    context = rclpy.Context()
    rclpy.init(context=context)
    node = GoalLifecycleNode(context=context, node_name=NAME, parameter_overrides=[
        Parameter("model_path", value=overrides.get("model_path", str(model_dir))), Parameter("device", value="cpu"),
        Parameter("steps", value=2), Parameter("progress_scorer", value="pixel"),
        Parameter("stale_timeout", value=0.5), Parameter("torch_threads", value=1)])
    planner = Planner(context, node_name=NAME)
    lifecycle = Lifecycle(planner.node, NAME)
    executor, thread = spin_in_background(node, num_threads=4)
    executor.add_node(planner.node)
    yield node, planner, lifecycle
    executor.shutdown()
    thread.join(10)
    planner.node.destroy_node()
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_configure_activate_deactivate_cleanup(managed):
    node, planner, lifecycle = managed
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED and node.predictor is None
    assert not planner.predict.wait_for_service(0.5)  # nothing is served before activate

    assert lifecycle.set(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    predictor = node.predictor
    assert predictor is not None and node.progress_model is not None  # the model loads in configure
    unet = weakref.ref(predictor.components.unet)
    assert not planner.predict.wait_for_service(0.5)  # but the services only come up in activate

    assert lifecycle.set(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
    wait_for(lambda: planner.camera.get_subscription_count(), "the camera subscription")
    deliver_frame(node, planner, frame(1), 1)
    response = planner.call(GOOD_INSTRUCTION)
    assert response.success, response.message
    action = ActionClient(planner.node, ReachVisualGoal, f"/{NAME}/reach_visual_goal")
    assert action.wait_for_server(WAIT)
    sent = action.send_goal_async(ReachVisualGoal.Goal(instruction=GOOD_INSTRUCTION))
    wait_for(sent.done, "the goal response")
    result = sent.result().get_result_async()
    wait_for(lambda: node.goal_action is not None and node.goal_action._active and
             all(t.node_goal_id for t in node.goal_action._active.values()), "the action goal to be tracked")

    assert lifecycle.set(Transition.TRANSITION_DEACTIVATE)  # tracking stops, the model stays
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    wait_for(result.done, "the action result")
    assert result.result().status == GoalStatus.STATUS_ABORTED
    assert result.result().result.reason == ReachVisualGoal.Result.SHUTDOWN
    assert node.current_goal_id == "" and node.predictor is predictor
    wait_for(lambda: not planner.predict.service_is_ready(), "predict_goal to go away")
    wait_for(lambda: not planner.camera.get_subscription_count(), "the camera subscription to go away")

    assert lifecycle.set(Transition.TRANSITION_ACTIVATE)  # again: no model load
    assert node.predictor is predictor
    deliver_frame(node, planner, frame(2), 2)
    assert planner.call(GOOD_INSTRUCTION).success
    assert lifecycle.set(Transition.TRANSITION_DEACTIVATE)

    assert lifecycle.set(Transition.TRANSITION_CLEANUP)  # the model is freed
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    del predictor
    gc.collect()
    assert node.predictor is None and node.progress_model is None and unet() is None

    assert lifecycle.set(Transition.TRANSITION_CONFIGURE)  # and loads again
    assert node.predictor is not None
    assert lifecycle.set(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED and node.predictor is None
    for said in ("configured:", "active:", "inactive:", "cleaned up:", "shut down:"):  # each transition is logged
        wait_for(lambda: [log for log in planner.logs if log.msg.startswith(said)], f"the {said!r} log line")


@pytest.mark.parametrize("managed", [{"model_path": "/nonexistent/model"}], indirect=True)
def test_configure_fails_on_a_missing_model_and_the_node_stays_unconfigured(managed):
    node, planner, lifecycle = managed
    assert not lifecycle.set(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED and node.predictor is None
    errors = wait_for(lambda: [log.msg for log in planner.logs if "configure failed" in log.msg], "the error log")
    assert "/nonexistent/model" in errors[0]
