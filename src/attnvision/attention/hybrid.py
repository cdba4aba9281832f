"""ECA + CBAM hybrids: ECA's channel gate with CBAM's spatial gate (the comparison proposal's goal 4,
Madmoni & Ben Or 2023, "Exploration of Attention Mechanisms for Image Classification").

Parts: ECA (Wang et al., CVPR 2020; ``eca.py``) replaces CBAM's (Woo et al., ECCV 2018;
``cbam.py``) two-layer shared MLP, which costs 2C²·r parameters, by a k-tap 1-D conv across
channels (k ≈ 5); CBAM's spatial gate adds the "where" that ECA lacks. Both gates are the
unchanged classes of those files.

Equations (x ∈ R^{B×C×H×W}; ω(·) ∈ R^{B×C×1×1} the ECA gate, M_s(·) ∈ R^{B×1×H×W} CBAM's
spatial gate):
    ECACBAMSequential:  x' = ω(x) ⊙ x,   out = M_s(x') ⊙ x'           (CBAM's channel-first order)
    ECACBAMParallel:    out = ω(x) ⊙ M_s(x) ⊙ x                        (both gates read the input)

Why the parallel variant multiplies the two gates rather than adding their logits as BAM does
(σ(a_c + a_s), with a residual 1 + ·): with the product, it differs from the sequential variant
in one thing only, the input of the spatial gate (x instead of x'), so comparing the two
isolates sequential vs parallel. A BAM-style sum would change the combination rule and the
residual form at the same time. The product also keeps each gate a separable, interpretable
map (ω per channel, M_s per position), as in CBAM.

Placement: ``"block"``, where CBAM goes (residual branch after the last BN, before the addition).

Deviations: none from the parts; the combination is our design, stated above. ``kernel_size``
is ECA's (adaptive by default, so per-stage overrides work as for ``"eca"``),
``spatial_kernel_size`` CBAM's (7).
"""

from __future__ import annotations

from .gate import Gate


class ECACBAMSequential(Gate):
    """ECA channel gate, then CBAM spatial gate on the re-weighted map. (B, C, H, W) → (B, C, H, W)."""

    placement = "block"
    paper = "ECA + CBAM, Madmoni & Ben Or 2023"
    kind = "channel+spatial"
    gate_order = "sequential"

    def __init__(self, channels: int, kernel_size: int | None = None, spatial_kernel_size: int = 7) -> None:
        super().__init__(channels, channel="eca", spatial="cbam", order=self.gate_order,
                         channel_kw={"kernel_size": kernel_size}, spatial_kw={"kernel_size": spatial_kernel_size})


class ECACBAMParallel(ECACBAMSequential):
    """ECA channel gate and CBAM spatial gate both from the input, multiplied. (B, C, H, W) → (B, C, H, W)."""

    gate_order = "parallel"
