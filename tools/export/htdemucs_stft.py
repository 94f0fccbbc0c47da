"""HTDemucs's STFT and inverse STFT in plain numpy: the part of the model that stays outside
the ONNX graph (see docs/models.md, "The HTDemucs graph").

This is the reference the Rust side implements. It reproduces `HTDemucs._spec` +
`HTDemucs._magnitude` (complex-as-channels) and `HTDemucs._mask` + `HTDemucs._ispec` of
demucs 4.x (demucs/htdemucs.py, demucs/spec.py) for the fixed window the graph was exported
with; export_htdemucs.py checks it against those torch functions on every export.

Conventions (hop H = n_fft / 4, window T samples, N = ceil(T / H) frames, F = n_fft / 2 bins):

- window w[n] = 0.5 - 0.5 cos(2 pi n / n_fft), n = 0..n_fft-1 (periodic Hann);
- frame j (j = 0..N-1) starts at sample j*H - 3H/2 of the input x, i.e. it is
  x_ext[j*H - 3H/2 + n] for n = 0..n_fft-1, where x_ext is x extended by reflection without
  repeating the edge sample (numpy/torch "reflect": x_ext[-i] = x[i],
  x_ext[T-1+i] = x[T-1-i]) and is only ever read in [-3H/2, N*H + 3H/2);
- X_j[k] = sum_n w[n] x_ext[j*H - 3H/2 + n] exp(-2 pi i k n / n_fft) / sqrt(n_fft),
  k = 0..F-1 (the Nyquist bin k = n_fft/2 is dropped);
- complex as channels: channel c's real part goes to channel 2c, its imaginary part to 2c+1.

The inverse takes F bins (Nyquist set to 0), y_j = sqrt(n_fft) * irfft(X_j) (length n_fft,
numpy's irfft, which scales by 1/n_fft), and overlap-adds w[n] * y_j[n] at sample
j*H - 3H/2 + n, divided by the sum of w^2 of every frame that covers the sample, counting the
two silent frames torch adds on each side (j = -2, -1, N, N+1): inside [0, T) that sum is
exactly 3/2 for this window and hop.
"""

import numpy as np


def hann_periodic(n_fft):
    n = np.arange(n_fft, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)


def frames_for(length, n_fft):
    hop = n_fft // 4
    return -(-length // hop)


def _reflect_extend(x, left, right):
    """x [..., T] extended by `left` and `right` samples of reflection (no edge repeat)."""
    t = x.shape[-1]
    if left >= t or right >= t:
        # demucs's pad1d zero-pads first in this case; the graphs never see such short
        # windows (the window is the model's training segment).
        raise ValueError(f"window of {t} samples is too short for reflect padding")
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)], mode="reflect")


def spec(x, n_fft):
    """x: float [C, T] -> the graph's `spec` input without the batch axis, float32
    [2C, n_fft/2, N] (complex as channels)."""
    x = np.asarray(x, dtype=np.float64)
    c, t = x.shape
    hop = n_fft // 4
    n = frames_for(t, n_fft)
    pad = hop // 2 * 3
    ext = _reflect_extend(x, pad, pad + n * hop - t)  # ext[i] = x[i - pad]
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None, :]  # [N, n_fft]
    frames = ext[:, idx] * hann_periodic(n_fft)  # [C, N, n_fft]
    z = np.fft.rfft(frames, axis=-1)[..., : n_fft // 2] / np.sqrt(n_fft)  # [C, N, F]
    z = np.transpose(z, (0, 2, 1))  # [C, F, N]
    out = np.empty((c, 2) + z.shape[1:], dtype=np.float64)
    out[:, 0] = z.real
    out[:, 1] = z.imag
    return out.reshape(2 * c, z.shape[1], n).astype(np.float32)


def ispec(s, length):
    """s: float [..., 2C, F, N] (complex as channels, e.g. the graph's `spec_out` for one
    source) -> float32 [..., C, length]."""
    s = np.asarray(s, dtype=np.float64)
    *lead, c2, f, n = s.shape
    c = c2 // 2
    n_fft = 2 * f
    hop = n_fft // 4
    pad = hop // 2 * 3
    s = s.reshape(*lead, c, 2, f, n)
    z = s[..., 0, :, :] + 1j * s[..., 1, :, :]  # [..., C, F, N]
    z = np.concatenate([z, np.zeros(z.shape[:-2] + (1, n))], axis=-2)  # Nyquist = 0
    y = np.fft.irfft(z, n=n_fft, axis=-2) * np.sqrt(n_fft)  # [..., C, n_fft, N]
    w = hann_periodic(n_fft)
    y = y * w[:, None]
    # Output sample t sits at position t + pad + 2*hop of a buffer whose frame k = j + 2
    # starts at k*hop (two silent frames before frame 0, two after frame N-1).
    total = (n + 4 - 1) * hop + n_fft
    buf = np.zeros(tuple(lead) + (c, total))
    env = np.zeros(total)
    for j in range(n):
        k = j + 2
        buf[..., k * hop : k * hop + n_fft] += y[..., j]
    for k in range(n + 4):
        env[k * hop : k * hop + n_fft] += w * w
    start = pad + 2 * hop
    return (buf[..., start : start + length] / env[start : start + length]).astype(np.float32)
