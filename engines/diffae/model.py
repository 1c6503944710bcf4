"""The DiffAE network, built from a config, with the parameter names and shapes of the official
checkpoints (the FFHQ-256 list is in shared/specs/diffae_ffhq256_ema_keys.txt; a test compares).

Two parts:
- `encoder` (semantic encoder): a UNet-style down path without time conditioning, then GroupNorm,
  SiLU, global average pooling and a 1×1 convolution: picture in [-1, 1] → z_sem.
- the conditional UNet: residual blocks whose output half applies GroupNorm, then
  h·(1 + t_scale) + t_shift from the time embedding, then h·(1 + z_scale) from z_sem, then SiLU and
  a convolution. Down- and up-sampling happen inside residual blocks (average pooling / nearest
  neighbour), attention at the configured resolutions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DiffAEConfig:
    image_size: int = 256
    channels: int = 128  # base width; also the size of the sinusoidal time features
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    encoder_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    embed_channels: int = 512  # time embedding width
    style_channels: int = 512  # z_sem
    num_heads: int = 1
    groups: int = 32


FFHQ256 = DiffAEConfig()
MAX_PARAMETERS = 2_000_000_000  # FFHQ-256 has 160 M; the largest official model (FFHQ-256 is the biggest released) is far below this


def config_from_json(text: str, origin: str = "config.json") -> DiffAEConfig:
    """A DiffAEConfig from a folder's config.json, checked before any weight is allocated: known keys,
    whole numbers in sane ranges, and a network of at most MAX_PARAMETERS (counted on the meta device).
    Raises ValueError with one sentence."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{origin} is not valid JSON ({exc}).") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{origin} must hold an object of settings.")
    known = {f.name: f for f in fields(DiffAEConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{origin} has settings DiffAE does not know: {', '.join(unknown)}.")

    def whole(name: str, value, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{origin}: {name} must be a whole number from {low} to {high}, not {value!r}.")
        return value

    values: dict = {}
    for name, value in raw.items():
        if name in ("channel_mult", "encoder_channel_mult", "attention_resolutions"):
            if not isinstance(value, list) or not 1 <= len(value) <= 8:
                raise ValueError(f"{origin}: {name} must be a list of 1 to 8 whole numbers, not {value!r}.")
            values[name] = tuple(whole(name, v, 1, 1024 if name == "attention_resolutions" else 16) for v in value)
        else:
            values[name] = whole(name, value, 1, 16 if name == "num_res_blocks" else 4096)
    config = DiffAEConfig(**values)
    for width in ("embed_channels", "style_channels"):
        if getattr(config, width) % 2:
            raise ValueError(f"{origin}: {width} must be even, not {getattr(config, width)}.")
    if config.channels % config.num_heads:
        raise ValueError(f"{origin}: channels ({config.channels}) must be a multiple of num_heads ({config.num_heads}).")
    if config.channels % config.groups:
        raise ValueError(f"{origin}: channels ({config.channels}) must be a multiple of groups ({config.groups}).")
    if config.image_size % 2 ** (len(config.encoder_channel_mult) - 1):
        raise ValueError(f"{origin}: image_size {config.image_size} cannot be halved {len(config.encoder_channel_mult) - 1} times.")
    with torch.device("meta"):
        count = sum(p.numel() for p in DiffAE(config).parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"{origin} describes a network of {count / 1e9:.1f} billion parameters; a DiffAE has well under "
                         f"{MAX_PARAMETERS / 1e9:.0f} billion.")
    return config


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: cos then sin, as guided-diffusion."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """A residual block. With `conditioned` it has the out half (norm → time scale/shift → z_sem
    scale → SiLU → conv); without (the encoder's blocks) it is the in half plus the skip path."""

    def __init__(self, cfg: DiffAEConfig, channels: int, out_channels: int, conditioned: bool, resample: str | None = None) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(cfg.groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = resample  # None, "down" or "up"
        self.conditioned = conditioned
        if conditioned:
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_channels, 2 * out_channels))
            self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cfg.style_channels, out_channels))
            self.out_layers = nn.Sequential(nn.GroupNorm(cfg.groups, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self._resample(norm_act(x)))
        x = self._resample(x)
        if self.conditioned:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            h = norm(h)
            if emb is not None:
                scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
                h = h * (1 + scale) + shift
            if cond is not None:
                h = h * (1 + self.cond_emb_layers(cond)[..., None, None])
            h = rest(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over positions; q, k, v from one 1-D convolution, split per head as the
    original ("legacy") order does."""

    def __init__(self, cfg: DiffAEConfig, channels: int) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.norm = nn.GroupNorm(cfg.groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb=None, cond=None) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, dim=1)
        scale = 1 / math.sqrt(math.sqrt(c // self.heads))
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1).type(q.dtype)
        h = torch.einsum("bts,bcs->bct", weights, v).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class Sequence(nn.ModuleList):
    """Blocks applied in order, each given the time embedding and z_sem when it uses them."""

    def forward(self, x, emb=None, cond=None):
        for block in self:
            x = block(x, emb, cond) if isinstance(block, (ResBlock, AttentionBlock)) else block(x)
        return x


def _down_path(cfg: DiffAEConfig, mult: tuple[int, ...], conditioned: bool) -> tuple[nn.ModuleList, list[int], int, int]:
    blocks = nn.ModuleList([Sequence([nn.Conv2d(3, cfg.channels, 3, padding=1)])])
    skips, ch, resolution = [cfg.channels], cfg.channels, cfg.image_size
    for level, m in enumerate(mult):
        for _ in range(cfg.num_res_blocks):
            layers = [ResBlock(cfg, ch, m * cfg.channels, conditioned)]
            ch = m * cfg.channels
            if resolution in cfg.attention_resolutions:
                layers.append(AttentionBlock(cfg, ch))
            blocks.append(Sequence(layers))
            skips.append(ch)
        if level != len(mult) - 1:
            blocks.append(Sequence([ResBlock(cfg, ch, ch, conditioned, "down")]))
            skips.append(ch)
            resolution //= 2
    return blocks, skips, ch, resolution


class SemanticEncoder(nn.Module):
    def __init__(self, cfg: DiffAEConfig) -> None:
        super().__init__()
        self.input_blocks, _, ch, _ = _down_path(cfg, cfg.encoder_channel_mult, conditioned=False)
        self.middle_block = Sequence([ResBlock(cfg, ch, ch, False), AttentionBlock(cfg, ch), ResBlock(cfg, ch, ch, False)])
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, cfg.style_channels, 1),
                                 nn.Flatten())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = image
        for block in self.input_blocks:
            h = block(h)
        return self.out(self.middle_block(h))


class TimeEmbedding(nn.Module):
    def __init__(self, cfg: DiffAEConfig) -> None:
        super().__init__()
        self.channels = cfg.channels
        self.time_embed = nn.Sequential(nn.Linear(cfg.channels, cfg.embed_channels), nn.SiLU(), nn.Linear(cfg.embed_channels, cfg.embed_channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.channels).to(self.time_embed[0].weight.dtype)
        return self.time_embed(features)


class DiffAE(nn.Module):
    """eps = model(x_t, t, z_sem); z_sem = model.encoder(x_0)."""

    def __init__(self, cfg: DiffAEConfig = FFHQ256) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SemanticEncoder(cfg)
        self.time_embed = TimeEmbedding(cfg)
        self.input_blocks, skips, ch, resolution = _down_path(cfg, cfg.channel_mult, conditioned=True)
        self.middle_block = Sequence([ResBlock(cfg, ch, ch, True), AttentionBlock(cfg, ch), ResBlock(cfg, ch, ch, True)])
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(cfg, ch + skips.pop(), m * cfg.channels, True)]
                ch = m * cfg.channels
                if resolution in cfg.attention_resolutions:
                    layers.append(AttentionBlock(cfg, ch))
                if level and j == cfg.num_res_blocks:
                    layers.append(ResBlock(cfg, ch, ch, True, "up"))
                    resolution *= 2
                self.output_blocks.append(Sequence(layers))
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, z_sem: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(t)
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, z_sem)
            skips.append(h)
        h = self.middle_block(h, emb, z_sem)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, z_sem)
        return self.out(h)
