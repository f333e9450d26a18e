"""Encode the next micro-batch while this one trains (``--prefetch-encoders``).

On a CPU the frozen encoders cost as much as the UNet: with instruction variants most instructions are new to the text
cache, and until every image has been seen once the latent cache misses too. A second thread encodes the next
micro-batch's instructions (as trained on: variant drawn, mirrored) and images while the main thread trains on the
current one, so with one torch thread each the two run on two cores.

Every random draw still comes from the micro-batch's own generator: the prefetch draws the variants and the flip from a
generator of the same key, which gives the same values. The instructions of a micro-batch are always encoded together,
so a resumed run computes the same embeddings as an uninterrupted one.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from .latent_cache import LatentCache, latent_keys
from .step import PREFETCHED_EMBEDDINGS, micro_batch_generator, micro_batch_pixels, step_instructions


class EncodingPrefetcher:
    """Iterator over micro-batches (numbered from ``start``) that encodes batch k+1 on a second thread while the
    caller trains on batch k. Each batch comes with ``batch[PREFETCHED_EMBEDDINGS]``: {instruction: embedding}."""

    def __init__(self, batches, start: int, run, latent_cache: LatentCache | None):
        self._batches, self._number = batches, start
        self._run, self._latent_cache = run, latent_cache
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actedit-prefetch")
        self._pending = self._submit()

    def _submit(self):
        batch = next(self._batches)
        future = self._pool.submit(self._encode, batch, self._number)
        self._number += 1
        return batch, future

    def _encode(self, batch: dict, number: int) -> dict[str, torch.Tensor]:
        run = self._run
        size = batch["input_pixels"].shape[0]
        generator = micro_batch_generator(run.args.seed, run.accelerator.process_index, number)
        instructions, _, _, flip = step_instructions(batch, generator, run.args, size)
        if self._latent_cache is not None:
            pixels = micro_batch_pixels(batch, flip, run.accelerator.device, run.weight_dtype)
            self._latent_cache.encode(run.vae, pixels, latent_keys(batch, flip))
        texts = list(dict.fromkeys(instructions))
        with torch.no_grad():
            embeddings = run.predictor.encode_texts(texts).to(run.weight_dtype)
        return dict(zip(texts, embeddings.split(1)))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch, future = self._pending
        embeddings = future.result()  # an exception of the second thread is raised here, in the training thread
        self._pending = self._submit()  # the next one encodes while the caller trains on this one
        return {**batch, PREFETCHED_EMBEDDINGS: embeddings}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
