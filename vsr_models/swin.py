"""Video Swin blocks as IART and PSRT-recurrent use them (``SwinIRFM``), with the same key names.

``SwinIRFM`` takes a short clip of features (n, t, C, h, w), runs 3-D windowed self-attention
over it (residual Swin groups, each closed by a per-frame 3x3 convolution) and returns the
centre frame's refined features (n, C, h, w). Quirks of the original that are reproduced:

* inside every block the normalised features are zero-padded at the end of t, h and w to
  multiples of the window; the padded tokens take part in attention (they are not masked) and
  are cropped afterwards, so results depend on the padding, as in the original;
* shifted blocks (every second one) roll by (window_t, window_h // 2, window_w // 2) and use the
  usual shifted-window mask (-100 between tokens from different regions), built on the padded
  size; with t = window_t the temporal roll is a no-op;
* ``conv_first``, ``conv_first_feat`` and ``conv_before_upsample`` exist only so that checkpoints
  load: IART feeds 120-channel features, for which the original skips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import checkpoint as activation_checkpoint

_MASK_VALUE = -100.0


def drop_path(x: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability ``prob``."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.prob, self.training)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear over the last axis."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """(N, N) int64 index into the (2wt-1)(2wh-1)(2ww-1) bias table, N = wt * wh * ww.

    Tokens of a window are ordered t-major, then h, then w.
    """
    wt, wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wt), torch.arange(wh), torch.arange(ww), indexing="ij"))
    coords = coords.flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N)
    rel_t, rel_h, rel_w = rel[0] + wt - 1, rel[1] + wh - 1, rel[2] + ww - 1
    return rel_t * (2 * wh - 1) * (2 * ww - 1) + rel_h * (2 * ww - 1) + rel_w


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(b, T, H, W, C) with T, H, W multiples of the window -> (b * windows, N, C)."""
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    x = x.view(b, t // wt, wt, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wt * wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], b: int, t: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (b * windows, N, C) -> (b, T, H, W, C)."""
    wt, wh, ww = window
    x = windows.view(b, t // wt, h // wh, w // ww, wt, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, -1)


def _regions(size: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region label along one axis of the padded, rolled volume: the original's three slices
    [0, size - window), [size - window, size - shift), [size - shift, size). A zero shift makes
    the last slice the whole axis, so every position gets one label.
    """
    pos = torch.arange(size, device=device)
    if shift == 0:
        return torch.zeros_like(pos)
    return (pos >= size - window).to(torch.int64) + (pos >= size - shift).to(torch.int64)


def shifted_window_mask(
    t: int, h: int, w: int, window: Sequence[int], shift: Sequence[int], device: torch.device
) -> torch.Tensor:
    """(windows, N, N) additive mask for shifted windows over a padded (t, h, w) volume: 0 within
    a region, -100 across regions."""
    labels = (
        _regions(t, window[0], shift[0], device).view(-1, 1, 1) * 9
        + _regions(h, window[1], shift[1], device).view(1, -1, 1) * 3
        + _regions(w, window[2], shift[2], device).view(1, 1, -1)
    )
    labels = window_partition(labels.view(1, t, h, w, 1), window).squeeze(-1)  # (windows, N)
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.where(
        differ, torch.full_like(differ, _MASK_VALUE, dtype=torch.float32), torch.zeros_like(differ, dtype=torch.float32)
    )


class WindowAttention(nn.Module):
    """Multi-head self-attention within 3-D windows, with a learned relative position bias."""

    def __init__(
        self, dim: int, window_size: Sequence[int], num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, tuple(window_size), num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wt, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (b * windows, N, C); mask: (windows, N, N) or None -> (b * windows, N, C).

        ``softmax(scale * q k^T + bias + mask) v`` per head. PyTorch runs it as one fused attention
        (``scaled_dot_product_attention``, about 3x faster on a CPU at IART's windows, equal to 1e-5);
        the ONNX export writes the products, the additions and the softmax out as standard ops.
        """
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.relative_position_bias_table.index_select(0, self.relative_position_index.reshape(-1))
        bias = bias.reshape(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)  # (1, heads, N, N)
        if torch.onnx.is_in_onnx_export():
            attn = (q * self.scale) @ k.transpose(-2, -1)
            # In place: the same sums as out-of-place, without two more (b*windows, heads, N, N) buffers.
            attn += bias
            if mask is not None:
                attn.view(-1, mask.shape[0], self.num_heads, n, n).add_(mask.to(attn.dtype).unsqueeze(1).unsqueeze(0))
            out = torch.softmax(attn, dim=-1) @ v
        else:
            if mask is not None:
                bias = bias + mask.to(bias.dtype).unsqueeze(1)  # (windows, heads, N, N)
                if bw != mask.shape[0]:
                    bias = bias.repeat(bw // mask.shape[0], 1, 1, 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    """(Shifted) window attention and an MLP, each pre-normalised and residual, on (b, t, h, w, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    @property
    def shifted(self) -> bool:
        return any(s > 0 for s in self.shift_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, _c = x.shape
        wt, wh, ww = self.window_size
        y = self.norm1(x)
        pad_t, pad_h, pad_w = (wt - t % wt) % wt, (wh - h % wh) % wh, (ww - w % ww) % ww
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h, 0, pad_t))
        tp, hp, wp = t + pad_t, h + pad_h, w + pad_w
        mask = None
        if self.shifted:
            y = torch.roll(y, shifts=tuple(-s for s in self.shift_size), dims=(1, 2, 3))
            mask = shifted_window_mask(tp, hp, wp, self.window_size, self.shift_size, x.device)
        y = self.attn(window_partition(y, self.window_size), mask)
        y = window_reverse(y, self.window_size, b, tp, hp, wp)
        if self.shifted:
            y = torch.roll(y, shifts=self.shift_size, dims=(1, 2, 3))
        y = y[:, :t, :h, :w, :]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, alternating plain and shifted windows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: Sequence[float],
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        shift = (window_size[0], window_size[1] // 2, window_size[2] // 2)
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim,
                    num_heads,
                    window_size,
                    (0, 0, 0) if i % 2 == 0 else shift,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    drop_path[i],
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = activation_checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class RSTB(nn.Module):
    """Residual Swin group: blocks, then a per-frame 3x3 convolution, plus the group's input."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: Sequence[float],
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.residual_group = BasicLayer(
            dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_path, use_checkpoint
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, t, h, w, C) -> (b, t, h, w, C)."""
        b, t, h, w, c = x.shape
        y = self.residual_group(x)
        y = self.conv(y.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w).contiguous())
        return y.view(b, t, c, h, w).permute(0, 1, 3, 4, 2) + x


class PatchEmbed(nn.Module):
    """Patch size 1: only a LayerNorm over channels (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, t, C, h, w) -> (b, t, h, w, C)."""
        return self.norm(x.permute(0, 1, 3, 4, 2))


class SwinIRFM(nn.Module):
    """Multi-frame Swin feature refinement, returning the centre frame (PSRT's ``SwinIRFM``).

    Args (names as in the original; only what IART uses is configurable):
        in_chans: image channels of the unused ``conv_first``.
        embed_dim: feature channels C.
        depths: Swin blocks per residual group.
        num_heads: heads per residual group.
        window_size: (t, h, w) attention window.
        mlp_ratio: MLP hidden width / C.
        qkv_bias, qk_scale: attention projection bias and logit scale.
        drop_path_rate: stochastic depth, rising linearly over all blocks (training only).
        use_checkpoint: activation checkpointing of each block while training.
        num_frames: frames per call (IART: 3).

    ``forward(x)``: (n, t, C, h, w), any h, w -> (n, C, h, w), the refined centre frame
    ``conv_after_body(norm(groups(norm(x)))[t // 2]) + x[:, t // 2]``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 120,
        depths: Sequence[int] = (6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6),
        window_size: Sequence[int] = (3, 8, 8),
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
        num_frames: int = 3,
    ) -> None:
        super().__init__()
        if len(window_size) != 3:
            raise ValueError(f"window_size must be (t, h, w), got {window_size}")
        if len(num_heads) != len(depths):
            raise ValueError(f"num_heads ({num_heads}) needs one entry per group of depths ({depths})")
        self.embed_dim, self.num_frames = embed_dim, num_frames
        self.window_size = tuple(window_size)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.conv_first_feat = nn.Conv2d(64, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                RSTB(
                    embed_dim,
                    depth,
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    rates[start : start + depth],
                    use_checkpoint,
                )
            )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Conv2d(embed_dim, 64, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _n, t, c, _h, _w = x.shape
        if c != self.embed_dim:
            raise ValueError(f"SwinIRFM here takes {self.embed_dim}-channel features, got {c} channels")
        centre = x[:, t // 2]
        feats = self.patch_embed(x)
        for layer in self.layers:
            feats = layer(feats)
        feats = self.norm(feats[:, t // 2])  # (n, h, w, C); the norm is per token
        return self.conv_after_body(feats.permute(0, 3, 1, 2).contiguous()) + centre
