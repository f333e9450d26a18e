"""``actedit-train-progress``: train the learned progress model from action-segment data.

Input: a dataset folder whose records keep intermediate frames (``actedit-make-dataset --keep-frames K`` for videos,
``python -m actedit_ros.world.dataset --frames K --negatives`` for the synthetic world): per record a start frame,
an end frame, K frames with their progress (time fraction or true progress) and optionally ``negative_frames`` (a
different action from the same start).

Stages, each resumable from ``--work-dir``:

1. goals: the goal images to train against, per record: the editor's own prediction from the start frame
   (``--editor``, the embedded default unless told otherwise; ``--editor none`` skips it), as the node gives it
   (``--goal-mode``: the composite by default; the settings are kept in ``goal_settings.json``), and the true end frame,
   every other record's degraded (blur, noise, colour shift). Records with the world's ground truth are read by the
   world's end-state readout: a predicted goal that shows the wrong end state turns the record's frames into
   negatives for that goal (the frames do not go where the goal shows). Predicted goals are cached as PNG.
2. features: every frame registered into the start view and lighting-normalised exactly as the scorer does at run
   time (:func:`actedit_ros.progress.learned.frame_inputs`), half of the records with the evaluation's perturbations
   (distractor, lighting drift, noise); cached per record.
3. train: binary cross-entropy of the network's progress against the frames' progress, with the goal augmented
   independently of the frames (colour gain/offset and blur, as GHIL-Glue does for generated goals); AdamW;
   checkpoints (safetensors, optimizer state included) every ``--checkpoint-every`` steps.
4. calibrate and export: a monotone map of the output, fitted on held-out records, puts the value above which
   ``--calibrate-max-false`` of their not-yet-done frames lie at 0.8 (the reached threshold); the network and the
   map go into one safetensors file (``--export``), loadable by ``load_progress_model``.

    actedit-train-progress --data work_dirs/progress/world160 --work-dir work_dirs/progress/run \\
        --export actedit_ros/models/progress/progress_model.safetensors
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from actedit_ros.training.data import load_progress_records, read_rgb
from actedit_ros.training.state_io import load_optimizer_tensors, optimizer_tensors

from .learned import INPUT_SIZE, ProgressModel, ProgressNet, frame_inputs, network_input, reference_inputs
from .perturbations import degrade_goal, perturb
from .scorer import ProgressScorer


# ------------------------------------------------------------------------------------------------ dataset records
def _stable_seed(text: str) -> int:
    return int(hashlib.blake2b(text.encode(), digest_size=4).hexdigest(), 16)


def _world_readout(record, size: tuple[int, int]):
    """The world's end-state readout of a record with the world's ground truth, else None."""
    if not {"seed", "regime"} <= set(record.world):
        return None
    from actedit_ros.world import generate_episode
    from actedit_ros.world.readout import EndStateReadout

    episode = generate_episode(seed=int(record.world["seed"]), regime=record.world["regime"], split=record.split,
                               size=size, num_frames=2)
    return EndStateReadout(episode)


# ------------------------------------------------------------------------------------------------ stage 1: goals
def predicted_goal(record, index: int, start: np.ndarray, predictor, goal_dir: Path, steps: int,
                   text_guidance: float = 7.5, composite: bool = True) -> tuple[str, np.ndarray, bool]:
    """("predicted", the editor's goal for the record (cached as PNG), whether the world's readout calls it right;
    True without world ground truth). ``composite``: the goal the node gives by default (goal_mode composite)."""
    cached = goal_dir / f"{record.id}.png"
    if cached.exists():
        predicted = read_rgb(cached)
    else:
        predicted = predictor.predict(start, record.instruction, steps=steps, seed=index,
                                      text_guidance=text_guidance, composite=composite).image
        cv2.imwrite(str(cached), cv2.cvtColor(predicted, cv2.COLOR_RGB2BGR))
    readout = _world_readout(record, (start.shape[1], start.shape[0]))
    return "predicted", predicted, readout is None or readout.read(predicted).correct


def record_goals(record, index: int, start: np.ndarray, end: np.ndarray, predictor, goal_dir: Path,
                 steps: int, composite: bool = True) -> list[tuple[str, np.ndarray, bool]]:
    """(kind, goal image, frames go toward it) for one record: its true or degraded end frame, and the editor's
    prediction when there is an editor."""
    goals = [("end", end, True)] if index % 2 == 0 else [("degraded", degrade_goal(end, index), True)]
    if predictor is None:
        return goals
    return goals + [predicted_goal(record, index, start, predictor, goal_dir, steps, composite=composite)]


def check_goal_settings(work_dir: Path, settings: dict) -> None:
    """Records in ``work_dir`` the settings its cached goals are made with, and refuses a re-run with others (the
    cache would mix goals of two kinds)."""
    path = work_dir / "goal_settings.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached != settings:
            changed = ", ".join(f"{k}: {cached.get(k)!r} there, {v!r} now" for k, v in settings.items()
                                if cached.get(k) != v)
            raise ValueError(f"--work-dir {work_dir} holds goals made with other settings ({changed}); "
                             "give a new --work-dir or the same options")
    else:
        path.write_text(json.dumps(settings, indent=1))


# ------------------------------------------------------------------------------------------------ stage 2: features
def record_features(record, goals: list[tuple[str, np.ndarray, bool]], start: np.ndarray) -> dict | None:
    """Network-ready arrays of one record: per goal its start/goal inputs, per frame its inputs and label."""
    frames = [read_rgb(p) for p in record.frames]
    labels = [float(p) for p in record.frame_progress]
    negatives = [read_rgb(p) for p in record.negative_frames]
    perturbed = _stable_seed(record.id) % 2 == 1
    if perturbed:
        seed = _stable_seed(record.id + "/perturb")
        frames = perturb(frames, seed=seed)
        negatives = perturb(negatives, seed=seed + 1) if len(negatives) > 2 else negatives
    refs, out = [], {"frame": [], "mask": [], "pixel": [], "label": [], "ref": []}
    for kind, goal, toward in goals:
        try:
            scorer = ProgressScorer(start, goal, registration="auto")
        except ValueError:  # the goal shows no change: nothing to learn against it
            continue
        refs.append(np.stack(reference_inputs(scorer)))
        clips = [(frames, labels if toward else [0.0] * len(frames)), (negatives, [0.0] * len(negatives))]
        for clip, clip_labels in clips:
            for frame, label in zip(clip, clip_labels):
                inputs, mask, pixel, _, _ = frame_inputs(scorer, frame)
                if inputs is None:
                    continue
                out["frame"].append(np.clip(np.rint(inputs), 0, 255).astype(np.uint8))
                out["mask"].append(mask)
                out["pixel"].append(pixel)
                out["label"].append(label)
                out["ref"].append(len(refs) - 1)
    if not out["frame"]:
        return None
    arrays = {key: np.asarray(value) for key, value in out.items()}
    arrays["refs"] = np.clip(np.rint(np.stack(refs)), 0, 255).astype(np.uint8)  # (goals, 2, 48, 64, 3)
    return arrays


def _cached_features(record, feature_dir: Path, make_goals) -> dict | None:
    """One record's features from ``feature_dir`` (made with ``make_goals(start, end)`` and cached if missing)."""
    cached = feature_dir / f"{record.id}.npz"
    if not cached.exists():
        start, end = read_rgb(record.start), read_rgb(record.end)
        arrays = record_features(record, make_goals(start, end), start)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, **(arrays or {"empty": np.zeros(0)}))
        tmp.replace(cached)
    with np.load(cached, allow_pickle=False) as data:
        return None if "empty" in data else {key: data[key] for key in data.files}


def build_features(records: list, work_dir: Path, editor: str, steps: int, weak_guidance: float = 0.0,
                   weak_records: int = 0, goal_mode: str = "composite") -> dict[str, np.ndarray]:
    """Stages 1 and 2 over all records (cached per record), concatenated. With ``weak_guidance`` > 0 the first
    ``weak_records`` records (0: all) also get a goal predicted at that lower text guidance: a weaker, vaguer edit,
    like those the editor makes for wordings it understands less well (cached apart, in ``*_g<guidance>``).
    ``goal_mode``: the predicted goals are the editor's composite (the node's default) or its plain output."""
    from tqdm import tqdm

    check_goal_settings(work_dir, {"editor": editor, "editor_steps": steps, "goal_mode": goal_mode,
                                   "weak_goal_guidance": weak_guidance, "weak_goal_records": weak_records})
    composite = goal_mode == "composite"

    predictor = None
    if editor != "none":
        from actedit_ros.editing import GoalPredictor

        predictor = GoalPredictor.from_pretrained(editor or None, device="cpu")
    weak = f"_g{weak_guidance:g}"
    dirs = [work_dir / name for name in ("goals", "features", "goals" + weak, "features" + weak)]
    for folder in dirs[:4 if weak_guidance > 0 else 2]:
        folder.mkdir(parents=True, exist_ok=True)
    parts, owners = [], []  # feature sets and the index of the record each came from
    for index, record in enumerate(tqdm(records, desc="goals and features", unit="record")):
        parts.append(_cached_features(record, dirs[1], lambda start, end: record_goals(
            record, index, start, end, predictor, dirs[0], steps, composite)))
        owners.append(index)
        if predictor is not None and weak_guidance > 0 and (not weak_records or index < weak_records):
            parts.append(_cached_features(record, dirs[3], lambda start, end: [predicted_goal(
                record, index, start, predictor, dirs[2], steps, text_guidance=weak_guidance,
                composite=composite)]))
            owners.append(index)
    owners = [owner for owner, part in zip(owners, parts) if part is not None]
    parts = [part for part in parts if part is not None]
    if not parts:
        raise ValueError("no record gave a usable training frame (all goals identical to their starts?)")
    merged = {key: np.concatenate([p[key] for p in parts]) for key in ("frame", "mask", "pixel", "label")}
    offsets = np.cumsum([0] + [len(p["refs"]) for p in parts[:-1]])
    merged["ref"] = np.concatenate([p["ref"] + o for p, o in zip(parts, offsets)])
    merged["refs"] = np.concatenate([p["refs"] for p in parts])
    merged["record"] = np.concatenate([np.full(len(p["label"]), owner) for owner, p in zip(owners, parts)])
    return merged


# ------------------------------------------------------------------------------------------------ stage 3: training
def augment_goals(goals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Goal images (B, 48, 64, 3) float, each with its own colour gain/offset and, for half, a blur (GHIL-Glue's
    independent goal augmentation, so a generated goal is scored like a real one)."""
    batch = goals.shape[0]
    gain = rng.uniform(0.85, 1.15, (batch, 1, 1, 3)).astype(np.float32)
    offset = rng.uniform(-15, 15, (batch, 1, 1, 3)).astype(np.float32)
    out = np.clip(goals * gain + offset, 0, 255)
    for i in np.flatnonzero(rng.random(batch) < 0.5):
        out[i] = cv2.GaussianBlur(out[i], (0, 0), float(rng.uniform(0.6, 1.6)))
    return out


def make_batch(data: dict, index: np.ndarray, rng: np.random.Generator | None):
    """(inputs, pixel progress, labels) tensors for samples ``index`` (augmented when ``rng`` is given)."""
    import torch

    refs = data["refs"][data["ref"][index]].astype(np.float32)  # (B, 2, 48, 64, 3)
    start, goal = refs[:, 0], refs[:, 1]
    frame = data["frame"][index].astype(np.float32)
    mask = data["mask"][index]
    if rng is not None:
        goal = augment_goals(goal, rng)
        flip = rng.random(len(index)) < 0.5
        start[flip], frame[flip], goal[flip] = start[flip, :, ::-1], frame[flip, :, ::-1], goal[flip, :, ::-1]
        mask = mask.copy()
        mask[flip] = mask[flip, :, ::-1]
    inputs = torch.from_numpy(network_input(start, frame, goal, mask))
    return inputs, torch.from_numpy(data["pixel"][index].astype(np.float32)), \
        torch.from_numpy(data["label"][index].astype(np.float32))


def drop_wrong_goals(data: dict) -> dict:
    """Leaves out the samples of goals none of whose frames go toward them (predicted goals the readout called
    wrong): the other-action clips already teach "not this goal", and a wrong goal's frames would also teach the
    network to distrust every blurry goal."""
    toward = np.zeros(len(data["refs"]), bool)
    toward[np.unique(data["ref"][data["label"] > 0])] = True
    keep = toward[data["ref"]]
    return {**{key: data[key][keep] for key in ("frame", "mask", "pixel", "label", "ref", "record")},
            "refs": data["refs"]}


def fit_calibration(predicted: np.ndarray, labels: np.ndarray, threshold: float = 0.8,
                    max_false: float = 0.01) -> list[list[float]]:
    """Knots of a monotone piecewise-linear map of the network's output that puts at ``threshold`` the lowest raw
    value above which at most ``max_false`` of the not-yet-done frames (progress < 0.8) lie. Monotone, so the
    order of frames (VOC) is untouched; it sets where ``reached`` fires."""
    early = np.sort(predicted[labels < 0.8])
    if not len(early):
        return [[0.0, 0.0], [1.0, 1.0]]
    cut = float(early[min(len(early) - 1, int(np.ceil((1 - max_false) * len(early))))])
    cut = float(np.clip(cut, 0.05, 0.95))
    return [[0.0, 0.0], [round(cut, 5), threshold], [1.0, 1.0]]


def train(data: dict, work_dir: Path, steps: int, batch_size: int, lr: float, width: int, seed: int,
          checkpoint_every: int, calibrate_max_false: float = 0.05) -> tuple[ProgressModel, list[dict]]:
    """Trains (resuming from ``work_dir/checkpoint*``) and returns the model and the log of validation rows."""
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    records = data["record"]
    val_records = set(np.flatnonzero(np.random.default_rng(0).random(records.max() + 1) < 0.05).tolist())
    is_val = np.isin(records, list(val_records))
    train_index, val_index = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    net = ProgressNet(width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, min(100, steps // 10))

    def learning_rate(i: int) -> float:  # linear warm-up, then cosine decay to zero
        return lr * min(1.0, (i + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, i / steps)))
    state_path, meta_path = work_dir / "checkpoint.safetensors", work_dir / "checkpoint.json"
    step, log = 0, []
    if state_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(state_path))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        load_optimizer_tensors(optimizer, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")},
                               source=str(state_path))
        step, log = int(meta["step"]), meta.get("log", [])
        rng = np.random.default_rng([seed, step])
        print(f"resumed from {state_path} at step {step}")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bar = tqdm(total=steps, initial=step, desc="train progress model", unit="step")
    while step < steps:
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        inputs, pixel, labels = make_batch(data, rng.choice(train_index, batch_size), rng)
        loss = loss_fn(net(inputs, pixel), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % checkpoint_every == 0 or step == steps:
            log.append({"step": step, "train_loss": round(loss.item(), 5), **validate(net, data, val_index)})
            tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
            tensors.update({f"opt.{k}": v for k, v in optimizer_tensors(optimizer).items()})
            save_file(tensors, str(state_path.with_suffix(".tmp")))
            state_path.with_suffix(".tmp").replace(state_path)
            meta_path.write_text(json.dumps({"step": step, "log": log}, indent=1))
    bar.close()
    net.eval()
    model = ProgressModel(net=net, info={"steps": steps, "seed": seed})
    if len(val_index) and calibrate_max_false > 0:
        raw, labels = predict_raw(net, data, val_index), data["label"][val_index]
        model.info["calibration"] = fit_calibration(raw, labels, max_false=calibrate_max_false)
        model.info["validation_calibrated"] = _agreement(model.calibrate(raw), labels)
    return model, log


def predict_raw(net, data: dict, index: np.ndarray) -> np.ndarray:
    """The network's uncalibrated output for samples ``index``."""
    import torch

    net.eval()
    predictions = []
    with torch.no_grad():
        for chunk in np.array_split(index, max(1, len(index) // 512)):
            inputs, pixel, _ = make_batch(data, chunk, None)
            predictions.append(torch.sigmoid(net(inputs, pixel)).numpy())
    return np.concatenate(predictions)


def _agreement(predicted: np.ndarray, labels: np.ndarray) -> dict:
    done, early = labels >= 0.95, labels < 0.8
    return {"val_mae": round(float(np.abs(predicted - labels).mean()), 4),
            "val_done_above_0.8": round(float((predicted[done] >= 0.8).mean()), 4) if done.any() else None,
            "val_early_above_0.8": round(float((predicted[early] >= 0.8).mean()), 4) if early.any() else None}


def validate(net, data: dict, val_index: np.ndarray) -> dict:
    """Mean absolute error and how often done / not-yet-done frames of held-out records score above 0.8."""
    if not len(val_index):
        return {}
    return _agreement(predict_raw(net, data, val_index), data["label"][val_index])


# ------------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-train-progress",
        description="Train the learned progress model (progress of a live frame toward a possibly imperfect, "
                    "predicted goal image) from a dataset that keeps intermediate frames of each action segment. "
                    "Resumes from --work-dir.")
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset folder with frames per record (actedit-make-dataset --keep-frames K, or "
                             "python -m actedit_ros.world.dataset --frames K --negatives)")
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="where goals, features and checkpoints are cached (a re-run resumes from them)")
    parser.add_argument("--export", type=Path, required=True,
                        help="where to write the trained model (.safetensors file or a folder)")
    parser.add_argument("--editor", default="",
                        help="editor whose predicted goals to train against: a model folder, empty for the embedded "
                             "default, or 'none' for true/degraded end frames only (default: embedded default)")
    parser.add_argument("--editor-steps", type=int, default=10, help="diffusion steps per predicted goal (default: 10)")
    parser.add_argument("--goal-mode", choices=("composite", "plain"), default="composite",
                        help="predicted goals to train against: the composite (the start frame outside the change "
                             "the editor predicts, the node's default goal_mode) or the editor's plain output "
                             "(default: %(default)s)")
    parser.add_argument("--weak-goal-guidance", type=float, default=3.0,
                        help="also train against goals predicted at this lower text guidance (weaker, vaguer edits, "
                             "like those of wordings the editor knows less well); 0: off (default: %(default)s)")
    parser.add_argument("--weak-goal-records", type=int, default=900,
                        help="only the first N records get a weak goal (0: all; default: %(default)s, as the shipped "
                             "model was trained)")
    parser.add_argument("--wrong-goals", choices=("drop", "negative"), default="drop",
                        help="predicted goals the world's readout calls wrong: left out (default) or trained as "
                             "negatives (their frames at progress 0)")
    parser.add_argument("--calibrate-max-false", type=float, default=0.05,
                        help="remap the output (monotone) so that this share of the held-out not-yet-done frames "
                             "score above 0.8, the reached threshold; the streaming filter's smoothing and "
                             "confirmation take the rest (default: %(default)s; 0: off; see README)")
    parser.add_argument("--steps", type=int, default=3000, help="optimisation steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--width", type=int, default=32, help="channels of the first convolution (default: 32)")
    parser.add_argument("--max-records", type=int, default=0,
                        help="use at most this many records, the first ones (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default: 250)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; training is meant to run "
                                                                "niced in the background)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    try:
        if args.steps < 1 or args.batch_size < 1 or args.checkpoint_every < 1:
            raise ValueError("--steps, --batch-size and --checkpoint-every must be >= 1")
        records = load_progress_records(args.data, "train")
        if args.max_records:
            records = records[:args.max_records]
        args.work_dir.mkdir(parents=True, exist_ok=True)
        data = build_features(records, args.work_dir, args.editor, args.editor_steps, args.weak_goal_guidance,
                              args.weak_goal_records, args.goal_mode)
        if args.wrong_goals == "drop":
            data = drop_wrong_goals(data)
        print(f"{len(data['label'])} training frames from {len(records)} records "
              f"({float((data['label'] == 0).mean()):.0%} at progress 0)")
        model, log = train(data, args.work_dir, args.steps, args.batch_size, args.lr, args.width, args.seed,
                           args.checkpoint_every, args.calibrate_max_false)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        path = model.save(args.export, trained_on=str(args.data), editor=args.editor or "embedded default",
                          records=len(records), input_size=list(INPUT_SIZE), validation=log[-1] if log else {},
                          settings=settings)
    except (ValueError, OSError) as error:  # DatasetError is a ValueError
        print(f"actedit-train-progress: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}" + (f" (validation: {log[-1]})" if log else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
