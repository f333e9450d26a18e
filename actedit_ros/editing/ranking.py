"""Rank candidate goals with the editor itself used as a classifier (the action loss's own quantity).

For a candidate goal z (its latents, in the scaled space the UNet denoises), the start frame's latents and an
instruction c, the denoising error e_c(z) = ||UNet([noisy z, start], t, c) - target||^2 (per element, target as the
model's ``prediction_type`` defines it, :func:`actedit_ros.training.losses.prediction_target`) measures how badly c
explains z. The score of a candidate is how much better the instruction explains it than the negative instructions
do:

    score(z) = mean over timesteps t of [ mean over negatives c- of e_c-(z)  -  e_c+(z) ]

in units of the per-element squared error, the gap e- - e+ that the action loss turns into p(c+ | z) with
:func:`actedit_ros.training.losses.action_probabilities`. The same noise and the same timesteps serve every
candidate and every text, so candidates are compared on equal terms. The default negative is the empty instruction:
the image-conditioned model without text predicts "nothing changed", so an unchanged candidate, the usual failure,
is explained as well by it and scores about 0; a candidate that shows the instructed change scores high.
"""
from __future__ import annotations

import torch

from actedit_ros.training.losses import per_sample_error, prediction_target

DEFAULT_NEGATIVES = ("",)
# Timesteps at which the classifier is evaluated, as fractions of the training schedule's length.
TIMESTEP_FRACTIONS = (0.125, 0.375, 0.625, 0.875)


def scoring_scheduler(scheduler_config):
    """The training-time (DDPM) noise schedule of a model: what the UNet learned to denoise."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config)


@torch.no_grad()
def instruction_scores(unet, noise_scheduler, candidates: torch.Tensor, start_latents: torch.Tensor,
                       text: torch.Tensor, negatives: list[torch.Tensor], seed: int = 0,
                       fractions: tuple[float, ...] = TIMESTEP_FRACTIONS) -> torch.Tensor:
    """Score (num,) of each candidate latent in ``candidates`` (num, C, h, w); higher = better explained by ``text``.

    ``text`` and every entry of ``negatives`` are (1, tokens, dim) embeddings; ``start_latents`` is (1, C, h, w)
    (unscaled, as InstructPix2Pix conditions on them).
    """
    if not negatives:
        raise ValueError("instruction_scores needs at least one negative instruction embedding")
    num = candidates.shape[0]
    dtype = next(unet.parameters()).dtype
    device = candidates.device
    texts = [text] + list(negatives)
    prompt = torch.cat([t.to(device, dtype).expand(num, -1, -1) for t in texts])
    image = start_latents.to(device, dtype).expand(num * len(texts), -1, -1, -1)
    clean = candidates.float()
    prediction_type = noise_scheduler.config.get("prediction_type", "epsilon")
    length = noise_scheduler.config.num_train_timesteps
    generator = torch.Generator("cpu").manual_seed(int(seed))
    gaps = torch.zeros(num, dtype=torch.float32, device=device)
    for fraction in fractions:
        step = min(length - 1, max(0, int(round(fraction * length))))
        timesteps = torch.full((num,), step, dtype=torch.long, device=device)
        # One noise draw per timestep, shared by all candidates (and all texts): equal terms for every comparison.
        noise = torch.randn((1, *clean.shape[1:]), generator=generator).to(device).expand_as(clean)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        target = prediction_target(noise_scheduler, clean, noise, timesteps, prediction_type)
        model_input = torch.cat([noisy.to(dtype).repeat(len(texts), 1, 1, 1), image], dim=1)
        out = unet(model_input, timesteps.repeat(len(texts)), encoder_hidden_states=prompt, return_dict=False)[0]
        errors = per_sample_error(out, target.repeat(len(texts), 1, 1, 1)).view(len(texts), num)
        gaps += errors[1:].mean(dim=0) - errors[0]
    return gaps / len(fractions)
