"""One training micro-step and the reproducible randomness behind it.

Every random draw of a micro-batch (flips, conditioning dropout, negative instructions, timesteps, noise, VAE latent
samples) comes from :func:`micro_batch_generator` keyed by (seed, process, micro-batch number), and the data order
from :class:`EpochShuffleSampler` keyed by (seed, epoch): what makes a resumed run continue bit-for-bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import mirror_instruction, to_model_range
from .latent_cache import LatentCache, encode_latents, latent_keys
from .losses import LossWeights, change_weights, editaction_objective, min_snr_weights, prediction_target


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of the dataset that depends only on (seed, epoch): the data order of every epoch is reproducible."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def micro_batch_generator(seed: int, process_index: int, micro_batch: int) -> torch.Generator:
    """The CPU generator every random draw of one micro-batch comes from (independent of the device and of history)."""
    state = np.random.SeedSequence([seed, process_index, micro_batch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def dropout_masks(batch: int, generator: torch.Generator, drop_text: float, drop_image: float,
                  drop_both: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (text_dropped, image_dropped) masks: text only w.p. drop_text, both w.p. drop_both, image only w.p.
    drop_image (one uniform draw per sample, as InstructPix2Pix does)."""
    u = torch.rand(batch, generator=generator)
    text = u < drop_text + drop_both
    image = (u >= drop_text) & (u < drop_text + drop_both + drop_image)
    return text, image



@dataclass
class StepTexts:
    """The texts one micro-step embedded (pass a list as ``texts_log`` to :func:`training_micro_step` to get them)."""

    instructions: list[str]  # each pair's instruction as trained on: its variant when one was drawn, then mirrored
    variant_used: list[bool]  # whether that pair's instruction is one of its instruction_variants
    prompts: list[str]  # the conditions embedded ("" where the text was dropped)
    negatives: list[str]  # the negative instructions embedded, for the pairs whose text was kept, in order


def choose_instruction_variants(instructions: list[str], variants: list[tuple[str, ...]], prob: float,
                                generator: torch.Generator) -> tuple[list[str], list[bool]]:
    """Each pair's instruction, replaced with probability ``prob`` by one of its ``variants`` chosen uniformly
    (pairs without variants keep theirs), and whether it was. Draws 2 x batch numbers from ``generator`` whatever
    the batch holds, so the draws of a micro-batch do not depend on which pairs have variants."""
    use = (torch.rand(len(instructions), generator=generator) < prob).tolist()
    picks = torch.rand(len(instructions), generator=generator).tolist()
    chosen, used = [], []
    for text, options, replace, pick in zip(instructions, variants, use, picks):
        used.append(bool(replace and options))
        chosen.append(options[min(int(pick * len(options)), len(options) - 1)] if used[-1] else text)
    return chosen, used


def step_instructions(batch: dict, generator: torch.Generator, args, size: int):
    """(instructions, originals, variant_used, flip) of a micro-batch: instruction variants drawn first
    (``--instruction-variant-prob``), then the random flip (``--random-flip``) mirroring left/right in them.
    ``originals`` are the pairs' own instructions (mirrored alike) where a variant replaced one, else None; ``flip``
    is None without random flips."""
    instructions = list(batch["instruction"])
    variant_used = [False] * size
    prob = getattr(args, "instruction_variant_prob", 0.0)
    if prob > 0:  # no draw at all when off: runs without the flag stay what they were
        instructions, variant_used = choose_instruction_variants(
            instructions, batch.get("instruction_variants") or [()] * size, prob, generator)
    originals = [text if used else None for text, used in zip(batch["instruction"], variant_used)]
    flip = None
    if args.random_flip:
        flip = torch.rand(size, generator=generator) < 0.5
        instructions = [mirror_instruction(t) if f else t for t, f in zip(instructions, flip.tolist())]
        originals = [mirror_instruction(t) if f and t is not None else t for t, f in zip(originals, flip.tolist())]
    return instructions, originals, variant_used, flip


def micro_batch_pixels(batch: dict, flip: torch.Tensor | None, device, dtype: torch.dtype) -> torch.Tensor:
    """The micro-batch's start images then its edited images, mirrored where ``flip`` says, in the model's range."""
    source, edited = batch["input_pixels"], batch["edited_pixels"]
    if flip is not None:
        flip_device = flip.to(device)[:, None, None, None]
        source = torch.where(flip_device, source.flip(-1), source)
        edited = torch.where(flip_device, edited.flip(-1), edited)
    return to_model_range(torch.cat([source, edited]).to(device), dtype)


PREFETCHED_EMBEDDINGS = "prefetched_text_embeddings"  # batch key: {instruction: embedding}, see prefetch.py


def embed_prompts(embed, prompts: list[str], prefetched: dict | None) -> torch.Tensor:
    """``embed(prompts)``, taking the embeddings computed ahead for this micro-batch where there are some."""
    if not prefetched:
        return embed(prompts)
    missing = [text for text in dict.fromkeys(prompts) if text not in prefetched]
    found = dict(zip(missing, embed(missing).split(1))) if missing else {}
    return torch.cat([prefetched[text] if text in prefetched else found[text] for text in prompts])


def training_micro_step(batch: dict, generator: torch.Generator, args, unet, reference_unet, vae, scaling: float,
                        noise_scheduler, prediction_type: str, weights: LossWeights, negatives, embed,
                        weight_dtype: torch.dtype, accelerator, latent_cache: LatentCache | None = None,
                        texts_log: list | None = None):
    """Forward pass of one micro-batch: every random draw from ``generator``; returns the objective's terms.

    With ``texts_log`` (a list), a :class:`StepTexts` of what was embedded is appended to it.
    """
    device = accelerator.device
    size = batch["input_pixels"].shape[0]
    instructions, originals, variant_used, flip = step_instructions(batch, generator, args, size)
    pixels = micro_batch_pixels(batch, flip, device, weight_dtype)
    if latent_cache is not None:
        mean, std = latent_cache.encode(vae, pixels, latent_keys(batch, flip))
    else:
        mean, std = encode_latents(vae, pixels)
    # InstructPix2Pix: the condition is the mode (= mean) of the input image's latent distribution, unscaled; the
    # target is a sample of the edited image's latent distribution, scaled.
    image_latents = mean[:size]
    noise_for_latents = torch.randn(mean[size:].shape, generator=generator).to(device, mean.dtype)
    target_latents = ((mean[size:] + std[size:] * noise_for_latents) * scaling).float()
    noise = torch.randn(target_latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (size,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(target_latents, noise, timesteps)
    target = prediction_target(noise_scheduler, target_latents, noise, timesteps, prediction_type)

    text_dropped, image_dropped = dropout_masks(size, generator, args.drop_text_prob, args.drop_image_prob,
                                                args.drop_both_prob)
    prompts = ["" if dropped else text for text, dropped in zip(instructions, text_dropped.tolist())]
    text_embeddings = embed_prompts(embed, prompts, batch.get(PREFETCHED_EMBEDDINGS))
    image_latents = image_latents.float() * (~image_dropped).to(device)[:, None, None, None]

    negative_embeddings, action_mask, negative_texts = None, None, []
    if negatives is not None:
        action_mask = ~text_dropped
        kept = action_mask.tolist()
        chosen = [text for text, keep in zip(instructions, kept) if keep]
        if chosen:
            # Drawn for the instruction trained on (a variant shares no word with its negative either), never the
            # pair's own original wording.
            negative_texts = negatives.sample(chosen, generator, also_exclude=[
                original for original, keep in zip(originals, kept) if keep])
            negative_embeddings = embed(negative_texts)
        action_mask = action_mask.to(device)
    if texts_log is not None:
        texts_log.append(StepTexts(instructions, variant_used, prompts, negative_texts))
    snr = (min_snr_weights(noise_scheduler, timesteps, weights.min_snr_gamma, prediction_type)
           if weights.min_snr_gamma else None)
    pixel_weights = change_weights(mean[:size], mean[size:], weights.change) if weights.change else None
    with accelerator.autocast():
        return editaction_objective(unet, noisy, image_latents, timesteps, text_embeddings, target, weights,
                                    negative_text_embeddings=negative_embeddings, action_mask=action_mask,
                                    reference_unet=reference_unet, snr_weights=snr, pixel_weights=pixel_weights)
