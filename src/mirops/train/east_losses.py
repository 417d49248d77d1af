"""EAsT losses (Ding & Lerch, ISMIR 2023; docs/methods.md §3.5-3.7): distance correlation, alignment, KD.

The regulariser ties the student's feature sequence [B, T', C] to a frozen teacher's embeddings [B, T, D]:
both are brought to a common time axis by repeating the coarser one and truncating to the shorter, then at
each aligned step the batch's N x N distance matrices are compared by (squared) distance correlation, and
L_reg = mean over steps of (1 - R_t). No projection is learned: C and D may differ. Because R_t is computed
across the mini-batch, the loss depends on batch composition; batch size 16 is part of the method. The
reference's alternative, `cosine_distance_difference`, compares cosine-similarity matrices instead
(`REGULARISERS` maps the reference's mode names to the two).

    L = (1 - lam) * BCE + lam * L_reg                        (EAsT)
    L = (1 - lam) * BCE + lam * (0.3 * KD + 0.7 * L_reg)     (KD + EAsT)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mirops.train.loop import masked_bce

# lam (`reg_loss_weight`) of the reference's final configs, per dataset and teacher (docs/methods.md §3.7).
REG_LOSS_WEIGHTS = {
    "mtat": {"vggish": 0.6, "openl3": 0.6, "passt": 0.6, "panns": 0.6},
    "openmic": {"vggish": 0.8, "openl3": 0.8, "passt": 0.9, "panns": 0.9},
}
KD_TAU = 2.0
KD_WEIGHT = 0.3  # share of KD inside the regulariser of KD + EAsT; distance correlation gets the other 0.7

_SQRT_EPS = 1e-12  # inside the distance's square root (the reference's), keeps sqrt differentiable at 0
_DENOM_EPS = 1e-9  # under the normalising square root (the reference's)


# --------------------------------------------------------------------------- distance correlation


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances between the rows of x [..., N, D] -> [..., N, N].

    Differences are formed explicitly (O(N^2 D) memory, small at N = 16) rather than through the Gram
    matrix, whose cancellation near the zero diagonal is what the 1e-12 would then amplify.
    """
    diff = x.unsqueeze(-2) - x.unsqueeze(-3)
    return torch.sqrt(diff.square().sum(dim=-1) + _SQRT_EPS)


def double_centre(d: Tensor) -> Tensor:
    """A_ij = d_ij - mean_i. - mean_.j + mean_.. over the last two axes."""
    return d - d.mean(dim=-1, keepdim=True) - d.mean(dim=-2, keepdim=True) + d.mean(dim=(-2, -1), keepdim=True)


def distance_correlation(x: Tensor, y: Tensor) -> Tensor:
    """Squared sample distance correlation of paired rows: x [..., N, Dx], y [..., N, Dy] -> [...].

    The biased (V-statistic) batch estimate of the reference: dCov^2 / sqrt(dVar^2_x dVar^2_y + 1e-9), in
    [0, 1], 1 when y is a scaled rotation of x. For independent features it is not 0 at small N (about 0.77
    for 32-d vs 8-d Gaussians at N = 16) and shrinks as N grows. Computed in float32 at least.
    """
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"x and y must pair the same rows: {tuple(x.shape)} vs {tuple(y.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    a = double_centre(pairwise_distances(x.to(dtype)))
    b = double_centre(pairwise_distances(y.to(dtype)))
    dcov = (a * b).mean(dim=(-2, -1))
    return dcov / torch.sqrt(a.square().mean(dim=(-2, -1)) * b.square().mean(dim=(-2, -1)) + _DENOM_EPS)


# --------------------------------------------------------------------------- time alignment


def _repeat_ratio(fine_len: int, coarse_len: int, fine_hop: float | None, coarse_hop: float | None) -> float | int:
    """How many fine steps one coarse step spans: from the hops when both are known, else from the lengths
    rounded to an integer, as the reference's fixed factors are (62 vs 10-11 -> 6, 30-31 vs 15 -> 2)."""
    if fine_hop is not None and coarse_hop is not None:
        ratio = coarse_hop / fine_hop
        nearest = round(ratio)
        return nearest if nearest >= 1 and math.isclose(ratio, nearest, rel_tol=1e-6) else ratio
    return max(1, round(fine_len / coarse_len))


def align_repeat_truncate(
    student_seq: Tensor, teacher_seq: Tensor, student_hop: float | None = None, teacher_hop: float | None = None
) -> tuple[Tensor, Tensor]:
    """Bring student [B, Ts, C] and teacher [B, Tt, D] to one time axis -> ([B, T, C], [B, T, D]).

    The sequence with the coarser hop is repeated element-wise along time (`repeat_interleave`), then both are
    cut to the shorter length (docs/methods.md §3.5): OpenMIC, CP-ResNet 0.16 s vs teacher 0.96 s -> the teacher
    is repeated 6x; MTAT, Mobile FCN 1.92 s vs 0.96 s -> the student 2x. Without hops, the shorter sequence
    is taken as the coarser one and the factor is the rounded length ratio. A hop ratio that is not a whole
    number (say 0.5 s vs 0.16 s) maps fine step i to coarse step floor(i / ratio), which is the same thing
    for whole ratios and does not drift otherwise. A single clip-level teacher vector (Tt = 1) is repeated
    over every student step.
    """
    if student_seq.dim() != 3 or teacher_seq.dim() != 3 or student_seq.shape[0] != teacher_seq.shape[0]:
        raise ValueError(f"expected student [B, T, C] and teacher [B, T, D] with the same B, got "
                         f"{tuple(student_seq.shape)} and {tuple(teacher_seq.shape)}")
    student_len, teacher_len = student_seq.shape[1], teacher_seq.shape[1]
    if min(student_len, teacher_len) == 0:
        raise ValueError(f"empty sequence: student has {student_len} steps, teacher {teacher_len}")
    if teacher_len == 1:
        return student_seq, teacher_seq.expand(-1, student_len, -1)
    if student_hop is not None and teacher_hop is not None:
        student_is_coarse = student_hop > teacher_hop
    else:
        student_is_coarse = student_len < teacher_len
    if student_is_coarse:
        coarse, fine, coarse_hop, fine_hop = student_seq, teacher_seq, student_hop, teacher_hop
    else:
        coarse, fine, coarse_hop, fine_hop = teacher_seq, student_seq, teacher_hop, student_hop
    ratio = _repeat_ratio(fine.shape[1], coarse.shape[1], fine_hop, coarse_hop)
    length = min(fine.shape[1], math.ceil(coarse.shape[1] * ratio - 1e-9))
    steps = torch.arange(length, device=coarse.device)
    if isinstance(ratio, int):
        index = steps // ratio  # exactly repeat_interleave(ratio) followed by truncation
    else:
        index = torch.floor(steps.double() / ratio + 1e-9).long().clamp_max(coarse.shape[1] - 1)
    coarse, fine = coarse.index_select(1, index), fine[:, :length]
    return (coarse, fine) if student_is_coarse else (fine, coarse)


# --------------------------------------------------------------------------- EAsT


def east_regulariser(
    student_feats: Tensor, teacher_seq: Tensor, student_hop: float | None = None, teacher_hop: float | None = None
) -> Tensor:
    """mean over aligned steps t of (1 - R_t), R_t the distance correlation across the batch at step t.

    No label mask (docs/methods.md §3.6). The teacher is a constant: it is detached and moved to the student's
    device (precomputed embeddings arrive on the CPU).
    """
    teacher_seq = teacher_seq.detach().to(student_feats.device)
    student, teacher = align_repeat_truncate(student_feats, teacher_seq, student_hop, teacher_hop)
    # [B, T, .] -> [T, B, .]: one N x N distance matrix per time step, all steps at once.
    return (1.0 - distance_correlation(student.transpose(0, 1), teacher.transpose(0, 1))).mean()


def cosine_distance_difference(
    student_feats: Tensor, teacher_seq: Tensor, student_hop: float | None = None, teacher_hop: float | None = None
) -> Tensor:
    """mean over aligned steps t and pairs (i, j) of |S^s_t,ij - S^e_t,ij|, S_t the batch's N x N cosine similarities.

    The reference's other mode (`cosine_distance_difference` in `feature_space_reg.py`), which no final config
    uses (docs/methods.md §3.6): features are L2-normalised per step (`F.normalize`, so a zero vector compares
    as 0 to everything), and the L1 gap of the two similarity matrices is averaged, diagonal included (its
    entries are 1 - 1 = 0 unless a vector is zero, so they only dilute the mean by 1/N). In [0, 2]; blind to
    the scale of either side's features. Aligned, detached and placed exactly as `east_regulariser` does.
    """
    teacher_seq = teacher_seq.detach().to(student_feats.device)
    student, teacher = align_repeat_truncate(student_feats, teacher_seq, student_hop, teacher_hop)
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    # [B, T, .] -> [T, B, .]; normalising before or after the repeat is the same, as it acts per step.
    s = F.normalize(student.transpose(0, 1).to(dtype), dim=-1)
    e = F.normalize(teacher.transpose(0, 1).to(dtype), dim=-1)
    return (s @ s.transpose(-1, -2) - e @ e.transpose(-1, -2)).abs().mean()


# The reference's `mode` names -> the regulariser (same signature); every final config uses distance correlation.
REGULARISERS = {"distance_correlation": east_regulariser, "cosine_distance_difference": cosine_distance_difference}


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = KD_TAU, mask: Tensor | None = None) -> Tensor:
    """Soft knowledge distillation for multi-label outputs: per-class binary KL(p_t || p_s) at temperature tau,
    averaged over `mask`ed entries (all when None), times tau^2 (docs/methods.md §3.7).

    With p = sigmoid(z / tau): KL = p_t (z_t - z_s) / tau + log(1 - p_t) - log(1 - p_s), the log terms via
    softplus, so large logits do not saturate as the reference's 1 - p + 1e-9 does in float32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    z_s, z_t = student_logits / tau, teacher_logits.detach().to(student_logits.device) / tau
    kl = torch.sigmoid(z_t) * (z_t - z_s) + F.softplus(z_s) - F.softplus(z_t)
    if mask is not None:
        if not mask.any():
            return student_logits.sum() * 0.0  # nothing annotated: a finite zero, as masked_bce gives
        kl = kl[mask]
    return kl.mean() * tau**2


def east_loss_parts(
    logits: Tensor,
    labels: Tensor,
    student_feats: Tensor,
    teacher_seq: Tensor,
    lam: float,
    *,
    teacher_logits: Tensor | None = None,
    kd_weight: float = 0.0,
    tau: float = KD_TAU,
    student_hop: float | None = None,
    teacher_hop: float | None = None,
    regulariser: str = "distance_correlation",
) -> dict[str, Tensor]:
    """The loss and its terms, for logging: `prediction` (masked BCE), `east` (1 - distance correlation, or the
    cosine-distance difference with `regulariser="cosine_distance_difference"`),
    `kd` (only with kd_weight > 0), `regulariser` (what lam weighs) and `total`.

    kd_weight 0: EAsT. kd_weight 0.3 with teacher logits: KD + EAsT, regulariser = 0.3 KD + 0.7 L_reg
    (the reference's `CombineDistRegLoss`). KD is averaged over the annotated entries, as BCE is.
    """
    if not 0.0 <= lam <= 1.0 or not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"lam and kd_weight are mixing weights in [0, 1], got {lam} and {kd_weight}")
    if regulariser not in REGULARISERS:
        raise ValueError(f"unknown regulariser {regulariser!r}; choose one of {sorted(REGULARISERS)}")
    tie = REGULARISERS[regulariser]
    parts = {"prediction": masked_bce(logits, labels),
             "east": tie(student_feats, teacher_seq, student_hop, teacher_hop)}
    regulariser = parts["east"]
    if kd_weight > 0:
        if teacher_logits is None:
            raise ValueError("kd_weight > 0 needs teacher_logits (this teacher has no classifier)")
        parts["kd"] = kd_loss(logits, teacher_logits, tau, mask=~torch.isnan(labels))
        regulariser = kd_weight * parts["kd"] + (1.0 - kd_weight) * regulariser
    parts["regulariser"] = regulariser
    parts["total"] = (1.0 - lam) * parts["prediction"] + lam * regulariser
    return parts


def east_loss(
    logits: Tensor, labels: Tensor, student_feats: Tensor, teacher_seq: Tensor, lam: float,
    student_hop: float | None = None, teacher_hop: float | None = None,
) -> Tensor:
    """(1 - lam) * masked BCE + lam * EAsT regulariser; labels NaN = not annotated."""
    return east_loss_parts(logits, labels, student_feats, teacher_seq, lam,
                           student_hop=student_hop, teacher_hop=teacher_hop)["total"]


def east_kd_loss(
    logits: Tensor, labels: Tensor, student_feats: Tensor, teacher_seq: Tensor, teacher_logits: Tensor, lam: float,
    kd_weight: float = KD_WEIGHT, tau: float = KD_TAU,
    student_hop: float | None = None, teacher_hop: float | None = None,
) -> Tensor:
    """KD + EAsT: (1 - lam) * masked BCE + lam * (0.3 * KD + 0.7 * EAsT regulariser) (docs/methods.md §3.7)."""
    return east_loss_parts(logits, labels, student_feats, teacher_seq, lam, teacher_logits=teacher_logits,
                           kd_weight=kd_weight, tau=tau, student_hop=student_hop, teacher_hop=teacher_hop)["total"]
