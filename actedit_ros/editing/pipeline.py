"""GoalPredictor: predict the goal image (the scene once the instructed action is done) from a start frame.

The sampler follows InstructPix2Pix: the UNet sees the noisy latents concatenated with the start image's latents
and is guided twice (text guidance and image guidance, three batched UNet passes per step). On top of the diffusers
pipeline it adds what a robot needs:
- any input size: the frame is resized (aspect kept up to rounding to the model's size multiple) to the model's
  working resolution, and the goal is returned at exactly the input's size;
- N candidate goals in one batched call, ranked best first by the editor itself used as a classifier
  (:mod:`.ranking`: how much better the instruction explains each candidate than the empty instruction);
- when the model directory ships a goal refiner (:mod:`.goal_refiner`), the decoded goal is redrawn at twice the
  working size next to the start frame: the unchanged scene sharp, the change drawn from the model's world;
- a start frame unlike the model's training data is flagged when the model directory ships a threshold
  (:mod:`.out_of_domain`): the goal comes back with a warning that it is unreliable;
- typos in the instruction are corrected before the text encoder reads it (:mod:`.spelling`), and the notes say
  how it was read;
- the text embeddings of an instruction and the latents of a start frame are cached, so asking again (a new seed,
  more candidates, the same instruction on the same frame) skips the encoders;
- the fp16 black/NaN failure is detected and the sample is redone in float32, and the result says so.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .loading import EditActionComponents, load_components, make_scheduler
from .model_store import resolve_model_path
from .compositing import change_mask, composite_goal
from .out_of_domain import DomainCheck, decode_latents, load_threshold, reconstruction_psnr
from .ranking import DEFAULT_NEGATIVES, instruction_scores, scoring_scheduler
from .goal_refiner import load_refiner, refine_goals
from .spelling import SpellingCorrector

MAX_INSTRUCTION_CHARS = 1000
MAX_CANDIDATES = 16


@dataclass
class GoalPrediction:
    """The result of one predict() call."""

    images: list[np.ndarray]  # RGB uint8, each the input's (height, width); best first when ranked
    seconds: float  # wall time of the prediction
    seed: int
    steps: int
    fp32_fallback: bool = False  # True when non-finite values forced a float32 redo
    notes: list[str] = field(default_factory=list)  # human-readable remarks (resizing, fallbacks)
    scores: list[float] = field(default_factory=list)  # ranking score per image (best first); empty for one candidate
    domain: DomainCheck | None = None  # the out-of-domain check of the start frame (None: the model ships no threshold)
    warnings: list[str] = field(default_factory=list)  # what makes this goal unreliable (out of domain)
    composited: bool = False  # True: outside the predicted change each image is the start frame itself
    change_fractions: list[float] = field(default_factory=list)  # per image: share of the frame the change covers
    change_masks: list[np.ndarray] = field(default_factory=list)  # per image: that change (float32 in [0, 1], at the
    # working size; compositing.composite_goal pastes a plain image into the start frame through it)
    unrefined_images: list[np.ndarray] = field(default_factory=list)  # when refined: the decoded goals, upscaled to the
    # input's size (what a model without a refiner returns), in the same order

    @property
    def image(self) -> np.ndarray:
        return self.images[0]


def validate_instruction(instruction: str) -> str:
    """Strip and check an instruction; raise ValueError with the reason when it cannot be used."""
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
    cleaned = "".join(ch if ch.isprintable() else " " for ch in instruction)
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise ValueError("instruction is empty (after removing control characters and whitespace)")
    if len(cleaned) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"instruction is {len(cleaned)} characters long; at most {MAX_INSTRUCTION_CHARS} are accepted")
    return cleaned


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check a start image is RGB uint8 (H, W, 3) with both sides > 0."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (height, width, 3) RGB, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    return np.ascontiguousarray(image)


def working_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The (width, height) the model works at: about resolution**2 pixels, aspect kept up to rounding to ``multiple``."""
    scale = resolution / np.sqrt(width * height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def _to_input_size(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB uint8 image resized to (width, height): cubic when enlarging, area when shrinking."""
    enlarging = width * height > image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC if enlarging else cv2.INTER_AREA)


class GoalPredictor:
    """Predicts goal images with an InstructPix2Pix/EditAction model. Thread-safe: one prediction at a time."""

    def __init__(self, components: EditActionComponents, cache_size: int = 8):
        self.components = components
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer raises 'Already borrowed' when shared by threads
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._image_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._blank_embedding: torch.Tensor | None = None
        self._domain_cache: OrderedDict[tuple, DomainCheck] = OrderedDict()
        self._reconstruction_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._noise_scheduler = None  # the training-time schedule, built on the first ranking
        # The out-of-domain threshold ships in the model directory (None: the check is off).
        self.domain_threshold = load_threshold(components.model_path)
        # The goal refiner ships in the model directory too (None: goals are the decoded images).
        self.refiner = load_refiner(components.model_path)
        if self.refiner is not None:
            self.refiner.to(components.device)
        self._spelling: SpellingCorrector | None = None  # built on first use (its dictionary takes 0.1-0.2 s)

    @classmethod
    def from_pretrained(cls, model_path: str | None = None, device: str = "auto", dtype: str | None = None,
                        scheduler: str = "auto") -> "GoalPredictor":
        """Load a model directory; ``model_path=None`` (or "") loads the embedded default model."""
        return cls(load_components(resolve_model_path(model_path), device=device, dtype=dtype, scheduler=scheduler))

    @property
    def resolution(self) -> int:
        """Working resolution: the model works at about resolution x resolution pixels, aspect kept."""
        return self.components.resolution

    @resolution.setter
    def resolution(self, value: int) -> None:
        multiple = self.components.size_multiple
        if int(value) < multiple:
            raise ValueError(f"resolution must be at least {multiple} pixels for this model, got {value}")
        with self._lock:
            self.components.resolution = int(value)

    @property
    def device(self) -> torch.device:
        return self.components.device

    def set_scheduler(self, name: str) -> None:
        with self._lock:
            self.components.scheduler = make_scheduler(self.components.scheduler.config, name)

    # ----------------------------------------------------------------------------------------------- encoders
    def read_instruction(self, instruction: str, correct_spelling: bool = True) -> tuple[str, list[str]]:
        """The instruction as the text encoder will read it (validated; typos corrected unless switched off) and
        the notes that say what was corrected."""
        instruction = validate_instruction(instruction)
        if not correct_spelling:
            return instruction, []
        if self._spelling is None:
            with self._tokenizer_lock:
                self._spelling = SpellingCorrector.for_tokenizer(self.components.tokenizer)
        result = self._spelling.correct(instruction)
        return result.text, [result.note()] if result.corrections else []

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(len, tokens, dim) embeddings of ``texts``, encoded together, not cached (see :meth:`text_embeddings`)."""
        c = self.components
        with self._tokenizer_lock:
            tokens = c.tokenizer(texts, padding="max_length", max_length=min(c.tokenizer.model_max_length, 77),
                                 truncation=True, return_tensors="pt")
        kwargs = {}
        if "attention_mask" in tokens and c.text_encoder.__class__.__name__ != "CLIPTextModel":
            kwargs["attention_mask"] = tokens["attention_mask"].to(c.device)
        return c.text_encoder(tokens["input_ids"].to(c.device), **kwargs)[0].to(c.dtype)

    def text_embedding(self, instruction: str) -> torch.Tensor:
        """(1, tokens, dim) embedding of an instruction, cached."""
        cached = self._text_cache.get(instruction)
        if cached is None:
            cached = self.encode_texts([instruction])
            self._remember(self._text_cache, instruction, cached)
        else:
            self._text_cache.move_to_end(instruction)
        return cached

    def text_embeddings(self, instructions: list[str]) -> torch.Tensor:
        """(len, tokens, dim) embeddings of several instructions; the ones not cached are encoded in one batch (about
        2x cheaper per text on CPU than one by one) and cached."""
        found = {}
        for text in dict.fromkeys(instructions):
            if text in self._text_cache:
                self._text_cache.move_to_end(text)
                found[text] = self._text_cache[text]
        missing = [text for text in dict.fromkeys(instructions) if text not in found]
        if missing:
            for text, embedding in zip(missing, self.encode_texts(missing).split(1)):
                found[text] = embedding
                self._remember(self._text_cache, text, embedding)
        return torch.cat([found[text] for text in instructions])

    def blank_embedding(self) -> torch.Tensor:
        if self._blank_embedding is None:
            self._blank_embedding = self.encode_texts([""])
        return self._blank_embedding

    @torch.no_grad()
    def image_latents(self, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(1, 4, h, w) latents of a start frame at the working size, cached by the frame's content."""
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape, size)
        cached = self._image_cache.get(key)
        if cached is not None:
            self._image_cache.move_to_end(key)
            return cached
        c = self.components
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        pixels = torch.from_numpy(resized).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
        pixels = pixels.to(c.device, c.vae.dtype)
        # InstructPix2Pix conditions on the mode of the start image's latent distribution, unscaled.
        latents = c.vae.encode(pixels).latent_dist.mode()
        self._remember(self._image_cache, key, latents)
        return latents

    def _remember(self, cache: OrderedDict, key, value) -> None:
        cache[key] = value
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    # ----------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def _sample(self, text: torch.Tensor, blank: torch.Tensor, start_latents: torch.Tensor, num: int, steps: int,
                text_guidance: float, image_guidance: float, generator: torch.Generator,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Final latents, and the instruction's effect: per candidate and latent pixel, the summed norm over the
        steps of what the text adds to the model's output (text branch minus image-only branch)."""
        c = self.components
        scheduler = c.scheduler
        scheduler.set_timesteps(steps, device=c.device)
        shape = (num, c.unet.config.out_channels, *start_latents.shape[-2:])
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(c.device, dtype)
        latents = latents * scheduler.init_noise_sigma
        # Three guidance branches, batched: (text, image), (no text, image), (no text, no image).
        prompt = torch.cat([text.expand(num, -1, -1), blank.expand(num, -1, -1), blank.expand(num, -1, -1)]).to(dtype)
        image = start_latents.to(dtype).expand(num, -1, -1, -1)
        image = torch.cat([image, image, torch.zeros_like(image)])
        effect = torch.zeros((num, *start_latents.shape[-2:]), dtype=torch.float32, device=c.device)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 3), t)
            model_input = torch.cat([model_input, image], dim=1)
            out = c.unet(model_input, t, encoder_hidden_states=prompt, return_dict=False)[0]
            out_text, out_image, out_uncond = out.chunk(3)
            guided = out_uncond + text_guidance * (out_text - out_image) + image_guidance * (out_image - out_uncond)
            effect += (out_text - out_image).float().pow(2).sum(1).sqrt()
            latents = scheduler.step(guided, t, latents, generator=generator, return_dict=False)[0]
        return latents, effect

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        return vae.decode(scaled, return_dict=False)[0]

    def predict(self, image: np.ndarray, instruction: str, steps: int = 20, text_guidance: float = 7.5,
                image_guidance: float = 1.5, seed: int = 0, num_candidates: int = 1,
                negative_instructions: tuple[str, ...] = DEFAULT_NEGATIVES, composite: bool = False,
                refine: bool = True, correct_spelling: bool = True) -> GoalPrediction:
        """Predict ``num_candidates`` goal images for ``instruction`` from the RGB uint8 start ``image``.

        With more than one candidate they are ranked (:mod:`.ranking`, against ``negative_instructions``) and
        returned best first with their scores. ``composite``: outside the change the editor predicts, each goal is
        the start frame itself (:mod:`.compositing`); the plain output otherwise. ``refine``: pass the decoded goals
        through the model's goal refiner when it ships one (:mod:`.goal_refiner`). ``correct_spelling``: correct
        typos in the instruction first (:mod:`.spelling`; the notes say what was read differently).
        """
        instruction, notes = self.read_instruction(instruction, correct_spelling)
        image = validate_image(image)
        if not 1 <= int(steps) <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {steps}")
        if not 1 <= int(num_candidates) <= MAX_CANDIDATES:
            raise ValueError(f"num_candidates must be between 1 and {MAX_CANDIDATES}, got {num_candidates}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        c = self.components
        height, width = image.shape[:2]
        size = working_size(width, height, c.resolution, c.size_multiple)
        with self._lock:
            started = time.perf_counter()
            text = self.text_embedding(instruction)
            blank = self.blank_embedding()
            start_latents = self.image_latents(image, size)
            generator = torch.Generator("cpu").manual_seed(int(seed))
            latents, effect = self._sample(text, blank, start_latents, int(num_candidates), int(steps),
                                           text_guidance, image_guidance, generator, c.dtype)
            fp32_fallback = False
            if not torch.isfinite(latents).all():
                notes.append(f"non-finite latents in {c.dtype}; sampled again in float32")
                latents, effect = self._resample_float32(text, blank, start_latents, int(num_candidates),
                                                         int(steps), text_guidance, image_guidance, seed)
                fp32_fallback = True
            decoded = self._decode(latents)
            if not torch.isfinite(decoded).all():
                notes.append(f"non-finite decode in {c.vae.dtype}; decoded again in float32")
                decoded = self._decode_float32(latents)
                fp32_fallback = True
            pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
            goals, unrefined, order, scores = self._ranked_goals(pixels, image, size, start_latents, text,
                                                                 negative_instructions, seed, refine)
            images = [_to_input_size(g, width, height) for g in goals]
            unrefined = [_to_input_size(p, width, height) for p in unrefined]
            masks = [change_mask(e, size) for e in effect.cpu().numpy()[order]]
            if composite:
                images = [composite_goal(image, goal, mask) for goal, mask in zip(images, masks)]
            domain = self._check_domain(image, size, start_latents)
            seconds = time.perf_counter() - started
        if (width, height) != size:
            notes.append(f"worked at {size[0]}x{size[1]}, returned at the input's {width}x{height}")
        if unrefined:
            notes.append("decoded goal redrawn by the model's goal refiner")
        if composite:
            notes.append(f"start frame kept outside the predicted change ({100 * masks[0].mean():.0f}% of the frame)")
        if len(scores) > 1:
            notes.append(f"{len(scores)} candidates ranked by the editor (scores {scores[0]:.4g} .. {scores[-1]:.4g})")
        warnings = [domain.warning()] if domain is not None and domain.out_of_domain else []
        return GoalPrediction(images=images, seconds=seconds, seed=int(seed), steps=int(steps),
                              fp32_fallback=fp32_fallback, notes=notes, scores=scores, domain=domain,
                              warnings=warnings, composited=bool(composite),
                              change_fractions=[float(m.mean()) for m in masks], change_masks=masks,
                              unrefined_images=unrefined)

    def _ranked_goals(self, pixels: np.ndarray, image: np.ndarray, size: tuple[int, int], start_latents, text,
                      negative_instructions: tuple[str, ...], seed: int, refine: bool):
        """(goals, decoded, order, scores): the goals to return (refined when asked and the model ships a refiner,
        else the decoded ``pixels``), the decoded goals when refined (else []), both best first, the ranking's order
        of the candidates and its scores (for one candidate: [0] and []). The ranking scores what is returned,
        resized to the working size, so scoring a returned goal again gives its score."""
        refined = refine and self.refiner is not None
        goals = list(refine_goals(self.refiner, pixels, image)) if refined else list(pixels)
        order, scores = [0], []
        if len(goals) > 1:
            scored = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in goals] if refined else goals
            order, scores = self._rank(scored, start_latents, text, negative_instructions, seed)
        decoded = [pixels[i] for i in order] if refined else []
        return [goals[i] for i in order], decoded, order, scores

    @torch.no_grad()
    def _goal_latents(self, goals: list[np.ndarray]) -> torch.Tensor:
        """(num, 4, h, w) scaled latents of RGB uint8 goal images already at the working size (as training encodes
        its targets: the mode of the VAE's distribution times its scaling factor)."""
        vae = self.components.vae
        pixels = torch.from_numpy(np.stack(goals)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        latents = vae.encode(pixels.to(self.components.device, vae.dtype)).latent_dist.mode()
        return latents.float() * vae.config.scaling_factor

    def score_goals(self, image: np.ndarray, instruction: str, goals: list[np.ndarray],
                    negative_instructions: tuple[str, ...] = DEFAULT_NEGATIVES, seed: int = 0,
                    correct_spelling: bool = True) -> list[float]:
        """The editor's score of each goal image (RGB uint8, any size) for ``instruction`` from ``image``, in the
        given order: how much better the instruction explains it than the negatives (:mod:`.ranking`); the
        instruction is read as :meth:`predict` reads it."""
        instruction, _ = self.read_instruction(instruction, correct_spelling)
        image = validate_image(image)
        goals = [validate_image(goal) for goal in goals]
        c = self.components
        size = working_size(image.shape[1], image.shape[0], c.resolution, c.size_multiple)
        resized = [cv2.resize(goal, size, interpolation=cv2.INTER_AREA) for goal in goals]
        with self._lock:
            order, scores = self._rank(resized, self.image_latents(image, size), self.text_embedding(instruction),
                                       negative_instructions, seed)
        by_index = dict(zip(order, scores))
        return [by_index[i] for i in range(len(goals))]

    def _rank(self, goals: list[np.ndarray], start_latents: torch.Tensor, text: torch.Tensor,
              negative_instructions: tuple[str, ...], seed: int) -> tuple[list[int], list[float]]:
        """Order (best first) of goal images at the working size, and their scores in that order."""
        if not negative_instructions:
            raise ValueError("negative_instructions must name at least one instruction (\"\" is the empty one)")
        negatives = [self.blank_embedding() if n == "" else self.text_embedding(validate_instruction(n))
                     for n in negative_instructions]
        if self._noise_scheduler is None:
            self._noise_scheduler = scoring_scheduler(self.components.scheduler.config)
        latents = self._goal_latents(goals)
        scores = instruction_scores(self.components.unet, self._noise_scheduler, latents, start_latents, text,
                                    negatives, seed=seed)
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        return order, [float(scores[i]) for i in order]

    def _check_domain(self, image: np.ndarray, size: tuple[int, int], start_latents: torch.Tensor):
        """The out-of-domain check of a start frame (cached like its latents), or None when it is off."""
        if self.domain_threshold is None:
            return None
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape, size)
        cached = self._domain_cache.get(key)
        if cached is None:
            resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            min_psnr, path = self.domain_threshold
            psnr = reconstruction_psnr(self._start_reconstruction(image, size, start_latents), resized)
            cached = DomainCheck(psnr, min_psnr, path)
            self._remember(self._domain_cache, key, cached)
        return cached

    def _start_reconstruction(self, image: np.ndarray, size: tuple[int, int], start_latents: torch.Tensor):
        """The VAE's decode of the start frame's latents (RGB uint8, working size), cached like the latents: what
        the model's own decoder makes of the unchanged scene."""
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape, size)
        cached = self._reconstruction_cache.get(key)
        if cached is None:
            cached = decode_latents(self.components.vae, start_latents)
            self._remember(self._reconstruction_cache, key, cached)
        return cached

    def check_domain(self, image: np.ndarray) -> DomainCheck | None:
        """The out-of-domain check alone, without predicting (None when the model ships no threshold)."""
        image = validate_image(image)
        c = self.components
        size = working_size(image.shape[1], image.shape[0], c.resolution, c.size_multiple)
        with self._lock:
            return self._check_domain(image, size, self.image_latents(image, size))

    def _resample_float32(self, text, blank, start_latents, num, steps, text_guidance, image_guidance, seed):
        unet = self.components.unet
        original = unet.dtype
        unet.to(torch.float32)
        try:
            generator = torch.Generator("cpu").manual_seed(int(seed))
            return self._sample(text.float(), blank.float(), start_latents.float(), num, steps, text_guidance,
                                image_guidance, generator, torch.float32)
        finally:
            unet.to(original)

    def _decode_float32(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        original = vae.dtype
        vae.to(torch.float32)
        try:
            return self._decode(latents.float())
        finally:
            vae.to(original)
