"""Best-of-N: candidates ranked by the editor itself (the embedded default model as a classifier), CPU, seconds."""
import numpy as np
import pytest

from actedit_ros.editing import GoalPredictor
from actedit_ros.editing.pipeline import working_size
from actedit_ros.world.episode import end_state_of, generate_episode, make_instruction, possible_actions
from actedit_ros.world.scene import render_view

SIZE = (64, 48)


@pytest.fixture(scope="module")
def predictor():
    return GoalPredictor.from_pretrained(None, device="cpu")


def rendered_end_states(episode):
    """(true end, unchanged start, another action's end) rendered from the episode's last camera pose, and the
    other action's template instruction."""
    start = episode.start_state.copy()
    start.hand_visible = 0.0
    camera = episode.cameras[-1]
    own = (episode.action, episode.target, episode.reference)
    other = next(a for a in possible_actions(start) if a != own and a[0] != episode.action)
    other_instruction = make_instruction(np.random.default_rng(0), start, *other, "template")
    return (render_view(episode.end_state, SIZE, camera), render_view(start, SIZE, camera),
            render_view(end_state_of(start, *other), SIZE, camera), other_instruction)


EPISODES = [(0, "fixed"), (1, "head"), (2, "fixed"), (3, "head"), (4, "fixed"), (5, "head")]


@pytest.mark.parametrize("seed,regime", EPISODES)
def test_the_instructed_end_state_outranks_no_change(predictor, seed, regime):
    """The default negative (the empty instruction) catches the usual failure: a goal that shows nothing done."""
    episode = generate_episode(seed, regime, "test", size=SIZE, num_frames=2)
    true_end, unchanged, _, _ = rendered_end_states(episode)
    scores = predictor.score_goals(episode.frames[0], episode.instruction, [true_end, unchanged])
    assert scores[0] > scores[1] and scores[0] > 0, (episode.instruction, scores)


@pytest.mark.parametrize("seed,regime", EPISODES)
def test_with_the_other_instruction_as_negative_the_instructed_end_state_outranks_the_other_action(
        predictor, seed, regime):
    """Against the empty instruction alone a bigger wrong change can win; naming the alternative as a negative (as
    a planner that knows its options can) makes the editor a classifier between the two actions."""
    episode = generate_episode(seed, regime, "test", size=SIZE, num_frames=2)
    true_end, unchanged, other_end, other_instruction = rendered_end_states(episode)
    scores = predictor.score_goals(episode.frames[0], episode.instruction, [true_end, unchanged, other_end],
                                   negative_instructions=("", other_instruction))
    assert scores[0] == max(scores), (episode.instruction, other_instruction, scores)


def test_candidates_come_back_best_first_with_scores_that_match_the_images(predictor):
    # At the model's working size the returned images are the ones it scored (at another size they come back
    # resized, and scoring a resized image again gives a slightly different score).
    size = working_size(*SIZE, predictor.resolution, predictor.components.size_multiple)
    episode = generate_episode(5, "fixed", "test", size=size, num_frames=2)
    start = episode.frames[0]
    for seed in range(3):  # several batches: one may come out of the sampler already in order by chance
        result = predictor.predict(start, episode.instruction, steps=8, seed=seed, num_candidates=4)
        assert len(result.images) == len(result.scores) == 4
        assert result.scores == sorted(result.scores, reverse=True)
        # Scoring the returned images again gives the same scores: the order is the images' own.
        again = predictor.score_goals(start, episode.instruction, result.images, seed=seed)
        np.testing.assert_allclose(again, result.scores, rtol=1e-4, atol=1e-6)
        assert any("ranked by the editor" in note for note in result.notes)


def test_one_candidate_is_not_ranked(predictor):
    episode = generate_episode(6, "head", "test", size=SIZE, num_frames=2)
    result = predictor.predict(episode.frames[0], episode.instruction, steps=5, seed=0)
    assert len(result.images) == 1 and result.scores == []


def test_ranking_needs_a_negative(predictor):
    episode = generate_episode(7, "fixed", "test", size=SIZE, num_frames=2)
    with pytest.raises(ValueError, match="negative_instructions"):
        predictor.predict(episode.frames[0], episode.instruction, steps=2, num_candidates=2, negative_instructions=())


def test_actedit_eval_best_of_n_writes_its_table(tmp_path):
    import json

    from actedit_ros.editing.tiny import make_tiny_model
    from actedit_ros.world.evaluate import main

    model = make_tiny_model(tmp_path / "tiny", resolution=32)
    out = tmp_path / "eval"
    assert main(["--model", f"tiny={model}", "--episodes", "1", "--steps", "1", "--size", "32", "24",
                 "--best-of", "1", "3", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| tiny best of 1 | 2 |" in table and "| tiny best of 3 | 2 |" in table
    assert "| tiny | 1 | 2 |" in table and "| tiny | 3 | 2 |" in table  # the best-of-N table: model, N, episodes
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    top = [r for r in records if r.get("best_of") == 3]
    assert len(top) == 2 and all(r["any_correct"] >= r["correct"] for r in top)
    assert main(["--best-of", "0", "--episodes", "1", "--out", str(out)]) == 2


def test_world_rank_negatives_are_the_empty_instruction_and_other_actions():
    from actedit_ros.world.best_of_n import rank_negatives

    episode = generate_episode(8, "fixed", "test", size=SIZE, num_frames=2)
    assert rank_negatives(episode, "empty") == ("",)
    negatives = rank_negatives(episode, "world")
    assert negatives[0] == "" and 2 <= len(negatives) <= 5 and len(set(negatives)) == len(negatives)
    with pytest.raises(ValueError, match="rank-negatives"):
        rank_negatives(episode, "planner")
