"""Out of domain: the embedded default model flags real photos (its autoencoder cannot reproduce them), not world frames."""
import json
import shutil

import pytest

from actedit_ros.editing import GoalPredictor, ModelLoadError
from actedit_ros.editing.domain_calibration import as_rgb
from actedit_ros.editing.out_of_domain import THRESHOLD_FILE
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.world.episode import REGIMES, generate_episode

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (requirements.txt) ships the test photos")


@pytest.fixture(scope="module")
def predictor():
    return GoalPredictor.from_pretrained(None, device="cpu")


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "astronaut", "camera"])
def test_a_real_photo_gets_a_goal_with_a_warning_that_names_the_fix(predictor, photo):
    image = as_rgb(getattr(skimage_data, photo)())
    result = predictor.predict(image, "put the cup in the bowl", steps=2, seed=0)
    assert result.image.shape == image.shape  # still answered
    assert result.domain is not None and result.domain.out_of_domain
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert "OUT OF DOMAIN" in warning and "unreliable" in warning and "model_path" in warning
    assert THRESHOLD_FILE in warning


@pytest.mark.parametrize("size", [(64, 48), (320, 240)])
def test_world_frames_are_in_domain(predictor, size):
    for seed in range(3):
        for regime in REGIMES:
            episode = generate_episode(seed, regime, "test", size=size, num_frames=3)
            for frame in episode.frames:
                check = predictor.check_domain(frame)
                assert not check.out_of_domain, (seed, regime, check)
    result = predictor.predict(episode.frames[0], episode.instruction, steps=2)
    assert result.warnings == [] and not result.domain.out_of_domain


def test_the_check_is_off_for_a_model_without_a_threshold_file(tmp_path):
    model = make_tiny_model(tmp_path / "tiny", seed=0)
    predictor = GoalPredictor.from_pretrained(str(model), device="cpu")
    result = predictor.predict(as_rgb(skimage_data.coffee()), "open the drawer", steps=1)
    assert result.domain is None and result.warnings == []
    assert predictor.check_domain(as_rgb(skimage_data.coffee())) is None


def test_a_model_directory_can_ship_its_own_threshold(tmp_path):
    model = make_tiny_model(tmp_path / "tiny", seed=0)
    (model / THRESHOLD_FILE).write_text(json.dumps({"metric": "vae_reconstruction_psnr_db", "min_psnr_db": 99.0}))
    result = GoalPredictor.from_pretrained(str(model), device="cpu").predict(
        as_rgb(skimage_data.coffee()), "open the drawer", steps=1)
    assert result.domain.out_of_domain and result.domain.min_psnr_db == 99.0 and result.warnings


def test_a_broken_threshold_file_is_refused_naming_the_file(tmp_path):
    model = make_tiny_model(tmp_path / "tiny", seed=0)
    (model / THRESHOLD_FILE).write_text('{"min_psnr": 20}')
    with pytest.raises(ModelLoadError, match=f"{THRESHOLD_FILE}.*min_psnr_db"):
        GoalPredictor.from_pretrained(str(model), device="cpu")


def test_the_shipped_threshold_sits_below_every_world_frame_it_was_measured_on():
    from actedit_ros.editing.loading import packaged_default_model_dir

    config = json.loads((packaged_default_model_dir() / THRESHOLD_FILE).read_text())
    assert config["min_psnr_db"] < config["world_frames"]["min"]
    assert config["photos_flagged"] >= 0.9 * config["photos"]["n"]


def test_copying_the_default_without_its_threshold_turns_the_check_off(tmp_path):
    from actedit_ros.editing.loading import packaged_default_model_dir

    copy = tmp_path / "default"
    shutil.copytree(packaged_default_model_dir(), copy)
    (copy / THRESHOLD_FILE).unlink()
    assert GoalPredictor.from_pretrained(str(copy), device="cpu").domain_threshold is None
