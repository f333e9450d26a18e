"""The goal node as a managed (lifecycle) node: ``ros2 run actedit_ros goal_lifecycle_node``.

Same parameters, interfaces and behaviour as :class:`~actedit_ros.ros.goal_node.GoalNode` (they share
:class:`~actedit_ros.ros.goal_node.GoalNodeCore`), driven by the standard transitions
(``ros2 lifecycle set /goal_node configure`` ...):

* ``configure``: loads the editing and progress models and starts the prediction thread (a model that cannot be
  loaded fails the transition, with the error logged; the node stays unconfigured and can be configured again);
* ``activate``: the camera subscriptions, ``~/predict_goal``, ``~/clear_goal``, ``~/reach_visual_goal``, the goal and
  progress topics and ``/diagnostics`` come up;
* ``deactivate``: tracking stops: an action goal ends (reason SHUTDOWN), a waiting ``predict_goal`` caller is
  answered ``cancelled: ...``, a running prediction stops at its next model call, the goal is dropped and every
  interface goes; the model stays loaded, so ``activate`` is immediate;
* ``cleanup``: the prediction thread ends and the models are freed (``torch.cuda.empty_cache()`` on a GPU);
* ``shutdown``: whatever of the above applies, from any state.
"""
from __future__ import annotations

import gc
import sys

import torch
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from actedit_ros.editing import GoalPredictor, ModelLoadError
from actedit_ros.ros.goal_node import NODE_NAME, PREDICTION_STOP_WAIT, GoalNodeCore


class GoalLifecycleNode(GoalNodeCore, LifecycleNode):
    """The managed goal node (see the module docstring). ``predictor`` (tests) replaces loading ``model_path``."""

    def __init__(self, predictor: GoalPredictor | None = None, node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._init_state()
        self._declare_node_parameters()
        self._given_predictor = predictor
        self.placeholder_model = False
        self.interfaces_live = False

    # ------------------------------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_model(self._given_predictor)
        except (ModelLoadError, ValueError, OSError) as err:
            self.get_logger().error(f"configure failed: cannot load the model: {err}")
            self._free_model()
            return TransitionCallbackReturn.FAILURE
        self._stopping = None
        self._start_prediction_thread()
        self.get_logger().info("configured: model loaded; activate to serve")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stopping = None
        self._create_interfaces()
        self.interfaces_live = True
        self.get_logger().info("active: camera, services, action and topics are live")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive("deactivated")
        self.get_logger().info("inactive: tracking stopped, interfaces down, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_prediction_thread()
        self._free_model()
        self.get_logger().info("cleaned up: model freed; configure to load it again")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.interfaces_live:
            self._go_inactive("shut down")
        self._stopping = "shut down"
        self._stop_prediction_thread()
        self._free_model()
        self.get_logger().info("shut down: model freed")
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------------------------------ steps
    def _go_inactive(self, why: str) -> None:
        """Stop tracking and serving: end action goals and the running prediction, then drop every interface."""
        self.begin_shutdown(why)
        if self.goal_action is not None and self.goal_action.wait_idle(PREDICTION_STOP_WAIT):
            self.goal_action.wait_results_sent()
        if self._predict_lock.acquire(timeout=PREDICTION_STOP_WAIT):
            self._predict_lock.release()
        else:
            self.get_logger().warning(f"the cancelled prediction did not end within {PREDICTION_STOP_WAIT} s")
        self._destroy_interfaces()
        self.interfaces_live = False
        self._stopping = None

    def _free_model(self) -> None:
        """Drop the models (GPU memory included) so cleanup gives their memory back."""
        on_gpu = self.predictor is not None and torch.device(self.predictor.device).type == "cuda"
        self.predictor = None
        self.progress_model = None
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()

    def destroy_node(self) -> None:
        if self.interfaces_live and self.goal_action is not None:
            self.goal_action.destroy()
            self.goal_action = None
        self._stop_prediction_thread()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lib/actedit_ros/goal_lifecycle_node`` (process logic: :mod:`actedit_ros.ros.node_main`)."""
    from actedit_ros.ros.node_main import main as node_main  # noqa: PLC0415 - node_main imports goal_node

    return node_main(argv, node_class=GoalLifecycleNode, prog="goal_lifecycle_node")


if __name__ == "__main__":
    sys.exit(main())
