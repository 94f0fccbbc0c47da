"""dfn3-refiner: refines DeepFilterNet3's speech estimate on a long STFT grid.

Inputs are two waveforms of the same window at 48 kHz, [1, 1, T]: the mixture `mix` and
DFN3's speech estimate `dfn3` of it (what Voxsift's engine outputs with DFN3 alone at beta 1,
floor off, sample-aligned with the mix). Output `speech` [1, 1, T].

On a 2048/512 sqrt-Hann STFT (42.7 ms window, where an ideal mask gives about 2 dB more than on
DFN3's 20 ms grid), for the bins below `CUTOFF_HZ` only, a dilated conv net over the frames sees
log-spectra of both and predicts two real gains per bin and frame:

    Y = a * D + b * X        a in [0, A_MAX], b in [0, 1]

so it can take away music DFN3 left (a < 1) and give back speech DFN3 suppressed (b > 0). It
starts as the identity on DFN3 (a = 1, b = 0): untrained, it reproduces DFN3.

The `gate` variant drops the mix path and bounds the gain by GATE_MAX = 1.1:

    Y = a * D                a in [0, 1.1]

so it can hardly add to DFN3's estimate: whatever it learns, its music leak is never more than
0.83 dB above DFN3's (the `mix` variant, trained on the packaged data, leaked music DFN3 had
removed, on material unlike its training music; BENCHMARKS.md, "dfn3-refiner"). It starts as
the identity, a = 1, where the sigmoid still has a slope: with a bound of exactly 1 the gains
of a first try ran into it within 50 steps and stopped learning.

Above the cutoff
it leaves DFN3's estimate as it is, because the packaged training speech is band-limited (8 and
16 kHz recordings). The output is `dfn3 + ISTFT(Y - D)` over the low bins, which is `dfn3`
exactly wherever the net changes nothing.

Two STFT implementations compute the same transform: `torch.stft`/`torch.istft` for training
(fast) and fixed DFT matrices as conv1d / conv_transpose1d for the ONNX export (`export=True`),
because ONNX Runtime's STFT operator has no inverse.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

SAMPLE_RATE = 48000
N_FFT = 2048
HOP = 512
CUTOFF_HZ = 8000.0
BINS = int(CUTOFF_HZ * N_FFT / SAMPLE_RATE) + 1  # 342 bins, 0 .. 7992 Hz
A_MAX = 1.25
# The gate variant's largest gain, and its starting logit: a = GATE_MAX * sigmoid(z) = 1.
GATE_MAX = 1.1
GATE_BIAS = math.log(1.0 / (GATE_MAX - 1.0))
VARIANTS = ("mix", "gate")
# Samples padded on each side so that every output sample is covered by N_FFT / HOP frames.
PAD = N_FFT - HOP


def dft_basis():
    """Analysis kernels [2K, 1, N] for the low K bins, and the per-kernel scale [2K, 1, 1] that
    turns them into the synthesis kernels (so that the graph stores one DFT matrix)."""
    analysis, scale = common.dft_basis(N_FFT, BINS)
    return analysis.float(), scale.float()[:, None, None]


class Block(nn.Module):
    def __init__(self, ch, dilation):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.pw = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        return x + self.pw(F.gelu(self.conv(x))) * 0.5


class Refiner(nn.Module):
    def __init__(self, ch=192, dilations=(1, 2, 4, 8, 16, 1), variant="mix"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        a, s = dft_basis()
        self.register_buffer("analysis", a, persistent=False)
        self.register_buffer("syn_scale", s, persistent=False)
        self.register_buffer("win", common.sqrt_hann(N_FFT).float(), persistent=False)
        self.inp = nn.Conv1d(3 * BINS, ch, 3, padding=1)
        self.blocks = nn.ModuleList([Block(ch, d) for d in dilations])
        self.out = nn.Conv1d(ch, (2 if variant == "mix" else 1) * BINS, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            if variant == "gate":
                self.out.bias[:] = GATE_BIAS
                return
            # a = A_MAX * sigmoid(z) = 1 and b = sigmoid(z) ~ 0.0025 at the start.
            self.out.bias[:BINS] = math.log(1.0 / (A_MAX - 1.0))
            self.out.bias[BINS:] = -6.0

    def spec(self, x, export):
        """Low-band spectrum (re, im), each [B, K, frames], of x [B, 1, T] padded by PAD."""
        xp = F.pad(x, (PAD, PAD + HOP))
        if export:
            z = F.conv1d(xp, self.analysis, stride=HOP)
            return z[:, :BINS], z[:, BINS:]
        z = torch.stft(
            xp[:, 0],
            N_FFT,
            HOP,
            window=self.win,
            center=False,
            return_complex=True,
        )[:, :BINS]
        return z.real, z.imag

    def ispec(self, re, im, t, export):
        """The waveform [B, 1, t] of a low-band spectrum (inverse of `spec`)."""
        if export:
            synthesis = self.analysis * self.syn_scale
            y = F.conv_transpose1d(torch.cat([re, im], 1), synthesis, stride=HOP)
            return y[..., PAD : PAD + t]
        b, k, f = re.shape
        full = torch.zeros(b, N_FFT // 2 + 1, f, dtype=torch.complex64, device=re.device)
        full[:, :k] = torch.complex(re, im)
        frames = torch.fft.irfft(full, N_FFT, dim=1) * self.win[None, :, None] / 2.0
        y = F.fold(
            frames,
            output_size=(1, (f - 1) * HOP + N_FFT),
            kernel_size=(1, N_FFT),
            stride=(1, HOP),
        )[:, :, 0]
        return y[..., PAD : PAD + t]

    def gains(self, xr, xi, dr, di):
        lx = torch.log(xr * xr + xi * xi + 1e-9)
        ld = torch.log(dr * dr + di * di + 1e-9)
        ref = lx.mean(dim=(1, 2), keepdim=True)
        feat = torch.cat([lx - ref, ld - ref, ld - lx], 1) * 0.1
        h = self.inp(feat)
        for blk in self.blocks:
            h = blk(h)
        z = self.out(F.gelu(h))
        if self.variant == "gate":
            return GATE_MAX * torch.sigmoid(z), None
        a = A_MAX * torch.sigmoid(z[:, :BINS])
        b = torch.sigmoid(z[:, BINS:])
        return a, b

    def forward(self, mix, dfn3, export=False, with_spec=False):
        t = mix.shape[-1]
        nb = mix.shape[0]
        # One transform for both (the graph then holds one DFT matrix).
        zr, zi = self.spec(torch.cat([mix, dfn3], 0), export)
        xr, xi, dr, di = zr[:nb], zi[:nb], zr[nb:], zi[nb:]
        a, b = self.gains(xr, xi, dr, di)
        if b is None:
            yr, yi = a * dr, a * di
        else:
            yr, yi = a * dr + b * xr, a * di + b * xi
        y = dfn3 + self.ispec(yr - dr, yi - di, t, export)
        if with_spec:
            return y, (yr, yi)
        return y


class Export(nn.Module):
    """The graph as exported: (mix, dfn3) -> speech, DFT as convolutions."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mix, dfn3):
        return self.model(mix, dfn3, export=True)
