"""The VAE latents of training images, computed once: in memory (``--cache-latents``) and on disk
(``--latent-cache-file``)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("actedit_ros.training")


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the VAE's latent distribution for a batch of pixels in [-1, 1]."""
    distribution = vae.encode(pixels).latent_dist
    return distribution.mean, distribution.std


class LatentCache:
    """The VAE latent distribution of every image seen, by key (which image of which pair, flipped or not).

    Images are encoded one at a time so a cached value does not depend on which batch it first came in (batched
    kernels may round differently), which keeps resumed runs bit-identical to uninterrupted ones.
    """

    def __init__(self):
        self.entries: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.saved_size = 0  # entries in the file at the last load or save

    KINDS = ("input", "edited")  # the images of a pair, in the order micro_batch_pixels stacks them

    def save(self, path: Path, fingerprint: str) -> None:
        """Write every entry to ``path`` (safetensors, replaced atomically) under ``fingerprint``, which names what
        the values depend on (the VAE's weights, the dataset, the image preparation): :meth:`load` checks it."""
        from safetensors.torch import save_file

        keys = sorted(self.entries)
        tensors = {"keys": torch.tensor([[self.KINDS.index(k), i, int(f)] for k, i, f in keys], dtype=torch.int64),
                   "mean": torch.stack([self.entries[k][0] for k in keys]).contiguous(),
                   "std": torch.stack([self.entries[k][1] for k in keys]).contiguous()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial), metadata={"fingerprint": fingerprint})
        partial.replace(path)
        self.saved_size = len(keys)

    def load(self, path: Path, fingerprint: str) -> bool:
        """Take the entries of a file :meth:`save` wrote under the same ``fingerprint``; False (and nothing taken)
        when there is no such file or it was written for something else."""
        from safetensors import safe_open

        if not path.is_file():
            return False
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") != fingerprint:
                return False
            keys, mean, std = (handle.get_tensor(name) for name in ("keys", "mean", "std"))
        for (kind, index, flipped), m, sd in zip(keys.tolist(), mean, std):
            self.entries[(self.KINDS[kind], index, bool(flipped))] = (m, sd)
        self.saved_size = len(self.entries)
        return True

    def encode(self, vae, pixels: torch.Tensor, keys: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        for row, key in enumerate(keys):
            if key not in self.entries:
                mean, std = encode_latents(vae, pixels[row:row + 1])
                self.entries[key] = (mean[0].cpu(), std[0].cpu())  # host memory, also when training on a GPU
        means, stds = zip(*(self.entries[key] for key in keys))
        return torch.stack(means).to(pixels.device), torch.stack(stds).to(pixels.device)


def latent_keys(batch: dict, flip: torch.Tensor | None) -> list[tuple]:
    """The :class:`LatentCache` keys of :func:`micro_batch_pixels`' rows: (which image, pair index, mirrored)."""
    flipped = flip.tolist() if flip is not None else [False] * len(batch["index"])
    indices = batch["index"].tolist()
    return [(kind, i, f) for kind in LatentCache.KINDS for i, f in zip(indices, flipped)]


@dataclass
class LatentCacheFile:
    """--latent-cache-file: the latent cache kept on disk between runs (a resume, the next stage, another seed)."""

    path: Path
    fingerprint: str
    expected: int  # entries once every image has been seen

    @classmethod
    def open(cls, run, cache: LatentCache | None) -> "LatentCacheFile | None":
        args = run.args
        if cache is None or not args.latent_cache_file or not run.main_process:
            return None
        keeper = cls(Path(args.latent_cache_file).expanduser(), latent_cache_fingerprint(run),
                     2 * len(run.dataset) * (2 if args.random_flip else 1))
        if cache.load(keeper.path, keeper.fingerprint):
            log.info("latent cache: %d of %d images from %s", len(cache.entries), keeper.expected, keeper.path)
        elif keeper.path.exists():
            log.info("latent cache: %s was written for another VAE, dataset or image size; it will be replaced",
                     keeper.path)
        return keeper

    def save(self, cache: LatentCache, force: bool = False) -> None:
        """Write the cache when it grew by a fifth of the dataset since the last write (or at all, with force)."""
        grown = len(cache.entries) - cache.saved_size
        if grown > 0 and (force or grown >= self.expected // 5 or len(cache.entries) == self.expected):
            cache.save(self.path, self.fingerprint)


def latent_cache_fingerprint(run) -> str:
    """What the cached latents depend on: the VAE's encoder weights, the dataset index and the image preparation."""
    args = run.args
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(run.vae.state_dict().items()):
        if not name.startswith(("decoder.", "post_quant_conv.")):  # a refined decoder leaves the latents alone
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update((Path(args.dataset_dir) / "index.jsonl").read_bytes())
    digest.update(json.dumps([run.resolution, args.image_mode, args.max_train_pairs, str(run.weight_dtype)]).encode())
    return digest.hexdigest()
