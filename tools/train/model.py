"""vsep-small: a spectral-mask speech separator that runs as a `waveform` model.

The whole model is in the graph: STFT (conv1d with a fixed DFT basis, sqrt-Hann window),
log-magnitude features normalised per window, a non-causal dilated conv net over the frames,
a sigmoid magnitude mask, and the inverse STFT (conv_transpose1d, overlap-add). Input and
output are waveforms [1, 1, T] at 16 kHz, any T.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
BINS = N_FFT // 2 + 1


def dft_basis():
    """Analysis kernels [2B, 1, N] and synthesis kernels (inverse real DFT, overlap-add
    normalisation included) of all bins, Nyquist bin included."""
    analysis, scale = common.dft_basis(N_FFT, BINS)
    return analysis.float(), (analysis * scale[:, None, None]).float()


class Block(nn.Module):
    def __init__(self, ch, dilation):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.pw = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        return x + self.pw(F.gelu(self.conv(x))) * 0.5


class VSep(nn.Module):
    def __init__(self, ch=256, dilations=(1, 2, 4, 8, 16, 32, 1)):
        super().__init__()
        a, s = dft_basis()
        self.register_buffer("analysis", a, persistent=False)
        self.register_buffer("synthesis", s, persistent=False)
        self.inp = nn.Conv1d(BINS, ch, 3, padding=1)
        self.blocks = nn.ModuleList([Block(ch, d) for d in dilations])
        self.out = nn.Conv1d(ch, BINS, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 1.0)

    def forward(self, mix):
        # mix: [B, 1, T]
        t = mix.shape[-1]
        pad = N_FFT - HOP
        x = F.pad(mix, (pad, pad + HOP))
        spec = F.conv1d(x, self.analysis, stride=HOP)  # [B, 2B, frames]
        re, im = spec[:, :BINS], spec[:, BINS:]
        mag2 = re * re + im * im
        feat = torch.log(mag2 + 1e-8)
        feat = feat - feat.mean(dim=(1, 2), keepdim=True)
        h = self.inp(feat * 0.1)
        for b in self.blocks:
            h = b(h)
        mask = torch.sigmoid(self.out(F.gelu(h)))
        out = torch.cat([re * mask, im * mask], 1)
        y = F.conv_transpose1d(out, self.synthesis, stride=HOP)
        return y[..., pad : pad + t]
