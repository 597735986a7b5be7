"""FixMatch (Sohn et al., 2020): consistency between a weak and a strong view of unlabeled images.

The prediction on the weak view (by the student itself, or by an EMA teacher) becomes a pseudo-label
where its confidence reaches the threshold; the strong view is trained towards it with cross-entropy.
True labels of unlabeled images only measure how often pseudo-labels are right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def consistency_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's unsupervised loss: mean over the batch of the masked cross-entropy to the pseudo-labels.

    Args:
        weak_logits: Logits of the weak views (gradients are not taken through them).
        strong_logits: Logits of the strong views of the same images.
        threshold: Confidence a pseudo-label needs.

    Returns:
        The loss, the pseudo-labels and the mask of confident ones.

    """
    confidence, pseudo = weak_logits.detach().float().softmax(1).max(1)
    mask = confidence >= threshold
    loss = (F.cross_entropy(strong_logits.float(), pseudo, reduction="none") * mask).mean()
    return loss, pseudo, mask


def ema_teacher(student: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``student`` (parameters and buffers), never trained directly.

    Its ``n_averaged`` buffer counts the updates; both are in the module's state, so a resumed fit
    continues the same average.
    """
    teacher = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    teacher.requires_grad_(False)
    return teacher
