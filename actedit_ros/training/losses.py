"""The EditAction training objective, one function per term.

    L = w_diffusion * L_diffusion  +  w_action * L_action  +  w_regularizer * L_regularizer

Every UNet input is InstructPix2Pix's: the noisy target latents concatenated channel-wise with the (unscaled) latents
of the input image, plus the instruction's text embeddings. The target of the UNet follows the scheduler's
``prediction_type``: the noise ("epsilon"), the velocity ("v_prediction") or the clean latents ("sample", i.e.
x0-prediction, which converges much faster for small models trained from scratch on CPU).

- :func:`diffusion_loss` - the static InstructPix2Pix loss on (input image, instruction) -> edited image, optionally
  min-SNR weighted.
- :func:`action_loss` - the diffusion model as a classifier: Bayes over the denoising errors of the true instruction
  and of a negative instruction (same noise, same timestep), cross-entropy towards the true one.
- :func:`regularizer_loss` - keeps the fine-tuned UNet's prediction close to the frozen initial UNet's.
- :func:`freeze_cross_attention` - freezes the ``attn2`` (text cross-attention) layers, as the paper does.

Defaults (``actedit-train`` flags; the paper picked its lambdas by a small sweep, these are ours and why):

- ``--action-temperature 0.01``: measured with ``python -m actedit_ros.training.diagnostics`` on the default model's
  synthetic data after ~500 steps of the plain objective, the gap e- - e+ (per-element MSE) has median ~0.002 and
  90th percentile ~0.015 (classifier accuracy ~70%); at 0.01 the action loss is ~0.59 (< log 2 = 0.69): the
  classifier is informative without saturating, so every sample still carries a gradient. At 0.001 it saturates
  (~1.0-1.3, dominated by the worst samples); at 0.1 it is nearly flat (~0.68).
- ``--action-loss-weight 0.01``: the action loss's gradient on the errors is sigmoid(gap/T)/T, about 40-50 at T=0.01,
  so a weight of 0.01 makes it an auxiliary term about half as strong as the diffusion loss's.
- ``--regularizer-weight 0.1`` when fine-tuning pretrained weights (0 from a random init, where the "initial
  prediction" is noise): the regularizer is an MSE in the same units as the diffusion loss and starts at 0, so 0.1
  lets the UNet move to learn the actions while penalising drift an order of magnitude less than errors.

:func:`editaction_objective` runs the UNet once for the true instructions and once more, batched with it, for the
negatives (only when the action loss is on), and the frozen reference UNet once without gradients (only when the
regularizer is on).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def prediction_target(scheduler, clean_latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                      prediction_type: str) -> torch.Tensor:
    """What the UNet must predict for ``scheduler.add_noise(clean_latents, noise, timesteps)``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(clean_latents, noise, timesteps)
    if prediction_type == "sample":
        return clean_latents
    raise ValueError(f"unknown prediction_type {prediction_type!r}: use one of {PREDICTION_TYPES}")


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample min-SNR-gamma loss weights (Hang et al. 2023), expressed for the given parameterisation.

    The weight of the x0 loss is min(SNR, gamma); the same weighting in epsilon space is min(SNR, gamma) / SNR and
    in v space min(SNR, gamma) / (SNR + 1). Returns a float tensor of shape (batch,).
    """
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps).float()
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"unknown prediction_type {prediction_type!r}: use one of {PREDICTION_TYPES}")


def per_sample_error(prediction: torch.Tensor, target: torch.Tensor,
                     pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (optionally per-pixel weighted) squared error over every dimension but the batch, in float32: (batch,)."""
    squared = (prediction.float() - target.float()).pow(2)
    if pixel_weights is not None:
        squared = squared * pixel_weights.to(squared.device, torch.float32)
    return squared.flatten(1).mean(dim=1)


def change_weights(input_latents: torch.Tensor, edited_latents: torch.Tensor, weight: float,
                   threshold: float = 0.05) -> torch.Tensor:
    """Per-pixel weights (batch, 1, h, w) of the diffusion loss: 1 + ``weight`` where the edit changes the latents
    (any channel differs by more than ``threshold``, in the VAE's unscaled units; dilated by one latent pixel), 1
    elsewhere, divided by their mean per pair so a pair's loss keeps its scale and only moves toward the change."""
    changed = (input_latents.float() - edited_latents.float()).abs().amax(dim=1, keepdim=True) > threshold
    changed = F.max_pool2d(changed.float(), kernel_size=3, stride=1, padding=1)
    weights = 1.0 + weight * changed
    return weights / weights.mean(dim=(1, 2, 3), keepdim=True)


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                   pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Static InstructPix2Pix loss: mean (optionally weighted) squared error of the UNet's prediction.

    ``weights`` (batch,) are e.g. :func:`min_snr_weights`; ``pixel_weights`` (batch, 1, h, w) e.g.
    :func:`change_weights`; None means plain MSE.
    """
    errors = per_sample_error(prediction, target, pixel_weights)
    if weights is not None:
        errors = errors * weights.to(errors.device, errors.dtype)
    return errors.mean()


def action_probabilities(error_true: torch.Tensor, error_negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """p(c+ | x) of the diffusion classifier: softmax(-[e+, e-] / temperature)[0], per sample."""
    logits = -torch.stack([error_true, error_negative], dim=1) / temperature
    return logits.softmax(dim=1)[:, 0]


def action_loss(error_true: torch.Tensor, error_negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """The action loss: cross-entropy of the diffusion classifier towards the true instruction.

    ``error_true`` (e+) and ``error_negative`` (e-) are per-sample denoising errors (:func:`per_sample_error`) of the
    same noisy latents at the same timestep, conditioned on the true instruction c+ and on a negative instruction c-.
    Bayes with a uniform prior over {c+, c-} and p(x | c) proportional to exp(-e_c / temperature) gives
    p(c+ | x) = softmax(-[e+, e-] / temperature)[0]; the loss is -log p(c+ | x), averaged over the batch. It lowers
    e+ and raises e-, i.e. it teaches the model that the instruction must matter for the edit.

    ``temperature`` is in units of the per-element mean squared error. The likelihood of the diffusion-classifier
    view (error *summed* over the D latent elements) corresponds to temperature = 1/D, which saturates the softmax on
    almost every sample; a larger temperature keeps the classifier soft so every sample carries a gradient. The
    gradient on e+ is sigmoid((e+ - e-)/temperature) / temperature, so the loss weight and the temperature trade
    off: keep ``weight / temperature`` of order 1 relative to the diffusion loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # -log softmax(-[e+, e-]/T)[0] = softplus((e+ - e-) / T), computed stably.
    return F.softplus((error_true - error_negative) / temperature).mean()


def regularizer_loss(prediction: torch.Tensor, reference_prediction: torch.Tensor) -> torch.Tensor:
    """MSE between the fine-tuned UNet's prediction and the frozen initial UNet's prediction on the same input.

    Zero at the start of fine-tuning; it grows as the UNet drifts, which keeps the fine-tuned model's general
    editing ability (and its classifier-free guidance behaviour) close to the original's.
    """
    return F.mse_loss(prediction.float(), reference_prediction.detach().float())


def cross_attention_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The text cross-attention layers of a diffusers UNet (``attn2`` of every transformer block), by name."""
    return {name: module for name, module in unet.named_modules() if name.split(".")[-1] == "attn2"}


def freeze_cross_attention(unet: torch.nn.Module) -> list[str]:
    """Stop gradients to the UNet's cross-attention layers; returns the names of the frozen parameters."""
    frozen = []
    for name, module in cross_attention_modules(unet).items():
        for parameter_name, parameter in module.named_parameters():
            parameter.requires_grad_(False)
            frozen.append(f"{name}.{parameter_name}")
    return frozen


@dataclass
class LossWeights:
    """Weights of the three terms (0 switches a term off) and the action loss's temperature."""

    diffusion: float = 1.0
    action: float = 0.0
    regularizer: float = 0.0
    action_temperature: float = 0.01
    min_snr_gamma: float | None = None
    change: float = 0.0  # extra diffusion-loss weight where the edit changes the image (:func:`change_weights`)


@dataclass
class ObjectiveTerms:
    """The weighted total and each unweighted term (detached floats are in :meth:`as_log`)."""

    total: torch.Tensor
    diffusion: torch.Tensor
    action: torch.Tensor
    regularizer: torch.Tensor
    action_accuracy: torch.Tensor  # fraction of action samples where e+ < e-
    prediction: torch.Tensor  # the UNet's prediction for the true instructions (batch, C, h, w)

    def as_log(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "diffusion": float(self.diffusion.detach()),
                "action": float(self.action.detach()), "regularizer": float(self.regularizer.detach()),
                "action_accuracy": float(self.action_accuracy.detach())}


def editaction_objective(unet, noisy_latents: torch.Tensor, image_latents: torch.Tensor, timesteps: torch.Tensor,
                         text_embeddings: torch.Tensor, target: torch.Tensor, weights: LossWeights,
                         negative_text_embeddings: torch.Tensor | None = None,
                         action_mask: torch.Tensor | None = None, reference_unet=None,
                         snr_weights: torch.Tensor | None = None,
                         pixel_weights: torch.Tensor | None = None) -> ObjectiveTerms:
    """All terms of the EditAction loss for one batch.

    ``noisy_latents``, ``image_latents`` (already zeroed where the image condition is dropped), ``text_embeddings``
    (already the empty prompt's where the text is dropped) and ``target`` have batch size B. When the action loss is
    on, ``negative_text_embeddings`` holds one negative per sample selected by the boolean ``action_mask`` (B,), in
    order; those samples are run a second time with the negative, on the same noisy latents and timestep.
    ``snr_weights`` (B,) and ``pixel_weights`` (B, 1, h, w) weight the diffusion term only.
    """
    model_input = torch.cat([noisy_latents, image_latents], dim=1)
    batch = model_input.shape[0]
    zero = target.new_zeros((), dtype=torch.float32)
    use_action = weights.action > 0 and negative_text_embeddings is not None and action_mask is not None \
        and bool(action_mask.any())
    if use_action:
        model_input = torch.cat([model_input, model_input[action_mask]])
        unet_timesteps = torch.cat([timesteps, timesteps[action_mask]])
        encoder_states = torch.cat([text_embeddings, negative_text_embeddings.to(text_embeddings.dtype)])
    else:
        unet_timesteps, encoder_states = timesteps, text_embeddings
    output = unet(model_input, unet_timesteps, encoder_hidden_states=encoder_states, return_dict=False)[0]
    prediction = output[:batch]

    diffusion = diffusion_loss(prediction, target, snr_weights, pixel_weights) if weights.diffusion > 0 else zero
    action, accuracy = zero, zero
    if use_action:
        error_true = per_sample_error(prediction[action_mask], target[action_mask])
        error_negative = per_sample_error(output[batch:], target[action_mask])
        action = action_loss(error_true, error_negative, weights.action_temperature)
        accuracy = (error_true < error_negative).float().mean()
    regularizer = zero
    if weights.regularizer > 0:
        if reference_unet is None:
            raise ValueError("the regularizer needs the frozen reference UNet")
        reference_dtype = next(reference_unet.parameters()).dtype
        with torch.no_grad():
            reference = reference_unet(torch.cat([noisy_latents, image_latents], dim=1).to(reference_dtype), timesteps,
                                       encoder_hidden_states=text_embeddings.to(reference_dtype), return_dict=False)[0]
        regularizer = regularizer_loss(prediction, reference)
    total = weights.diffusion * diffusion + weights.action * action + weights.regularizer * regularizer
    return ObjectiveTerms(total=total, diffusion=diffusion, action=action, regularizer=regularizer,
                          action_accuracy=accuracy, prediction=prediction)
