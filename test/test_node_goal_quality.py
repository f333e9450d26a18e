"""Best-of-N scores and the out-of-domain warning through the goal node over real rclpy / Fast DDS.

The tiny random model ships a threshold here that no frame can reach (99 dB), so every start frame is "out of
domain": what the node then answers and logs is under test, not the detector (test_out_of_domain.py measures that).
"""
import json

import numpy as np
import pytest
from node_harness import frame, ros, stamp, wait_for  # noqa: F401 - ros is a fixture

from actedit_ros.editing.out_of_domain import THRESHOLD_FILE
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.ros.conversions import image_msg_to_rgb, rgb_to_image_msg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = make_tiny_model(tmp_path_factory.mktemp("tiny_ood_model"), seed=0)
    (model / THRESHOLD_FILE).write_text(json.dumps({"metric": "vae_reconstruction_psnr_db", "min_psnr_db": 99.0}))
    return model


def test_candidates_come_back_best_first_with_their_scores(ros):
    _, planner, _ = ros
    start = frame(11, (64, 48))
    response = planner.call("open the drawer", image=rgb_to_image_msg(start, stamp(11)), seed=2, num_candidates=4)
    assert response.success, response.message
    scores = list(response.candidate_scores)
    assert len(scores) == len(response.candidates) == 4
    assert scores == sorted(scores, reverse=True)
    images = [image_msg_to_rgb(c) for c in response.candidates]
    np.testing.assert_array_equal(images[0], image_msg_to_rgb(response.goal_image))
    single = planner.call("open the drawer", image=rgb_to_image_msg(start, stamp(12)), seed=2)
    assert single.success and len(single.candidate_scores) == 0


def test_out_of_domain_goal_is_adopted_with_a_message_and_a_node_warning(ros):
    node, planner, _ = ros
    response = planner.call("put the cup in the bowl", image=rgb_to_image_msg(frame(13), stamp(13)))
    assert response.success, response.message
    assert node.current_goal_id == response.goal_id
    assert "OUT OF DOMAIN" in response.message and "model_path" in response.message
    warnings = wait_for(lambda: [m for m in planner.logs if m.level == 30 and "OUT OF DOMAIN" in m.msg
                                 and response.goal_id in m.msg], "the node's out-of-domain warning")
    assert "unreliable" in warnings[0].msg
