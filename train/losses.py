"""Losses for the colorizers: the seed's MSE, and Zhang et al.'s soft-encoded, class-rebalanced
cross-entropy over quantised ab bins."""

import torch
import torch.nn.functional as F

from train.lab import AB_SCALE


def seed_mse(prediction: torch.Tensor, true_ab: torch.Tensor) -> torch.Tensor:
    """The seed's loss: MSE between predicted and true ab, both scaled to about [-1, 1]."""
    return F.mse_loss(prediction.float(), true_ab / AB_SCALE)


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, neighbours: int = 5, sigma: float = 5.0):
    """ab [N,2,h,w] -> (target distribution [N,Q,h,w] over the nearest bins with Gaussian weights,
    index of the nearest bin [N,h,w])."""
    distance2 = ((ab[:, None] - bins[None, :, :, None, None]) ** 2).sum(dim=2)
    nearest_d2, nearest = distance2.topk(neighbours, dim=1, largest=False)
    weights = torch.softmax(-nearest_d2 / (2.0 * sigma**2), dim=1)
    target = torch.zeros_like(distance2).scatter_(1, nearest, weights)
    return target, nearest[:, 0]


def rebalanced_bin_loss(logits: torch.Tensor, true_ab: torch.Tensor, bins: torch.Tensor, bin_weights: torch.Tensor):
    """Cross-entropy of the logits [N,Q,h,w] against the soft-encoded true ab (downsampled to h, w),
    each pixel weighted by how rare its colour is, so saturated colours are not drowned by gray."""
    ab_small = F.adaptive_avg_pool2d(true_ab, logits.shape[-2:])
    target, nearest = soft_encode(ab_small, bins)
    per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return (per_pixel * bin_weights[nearest]).mean()


@torch.no_grad()
def rebalancing_weights(ab_batches, bins: torch.Tensor, mix: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
    """Zhang et al. eq. 4: w proportional to 1 / ((1 - mix) * smoothed_prior + mix / Q), normalised so that
    the expected weight under the prior is 1. ab_batches yields ab tensors [N, 2, h, w]."""
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for ab in ab_batches:
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(flat, bins).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=len(bins)).double()
    prior = counts / counts.sum().clamp_min(1)
    # smooth the prior over ab with a Gaussian kernel: neighbouring colours share evidence
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()) ** 2 / (2 * sigma**2))
    prior = kernel @ prior
    prior = prior / prior.sum()
    weights = 1.0 / ((1.0 - mix) * prior + mix / len(bins))
    weights = weights / (prior * weights).sum()
    return weights.float()


def annealed_mean_l1(mean_ab: torch.Tensor, true_ab: torch.Tensor, beta: float = 0.05) -> torch.Tensor:
    """Smooth-L1 between the decoded annealed mean [N,2,h,w] and the true ab averaged down to h, w, both over
    AB_SCALE: the bin loss alone rewards a vivid colour even where it is the wrong one."""
    target = F.adaptive_avg_pool2d(true_ab, mean_ab.shape[-2:])
    return F.smooth_l1_loss(mean_ab.float() / AB_SCALE, target / AB_SCALE, beta=beta)


def chroma_overshoot(mean_ab: torch.Tensor, true_ab: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    """Hinge on how far the decoded chroma [N,2,h,w] exceeds the truth's (averaged down to h, w) beyond margin, over
    AB_SCALE. An overshoot above 20 is itself an ab error above 20, so this penalises exactly what evaluate's
    false-colour figure counts (confident wrong colour); an undershoot is left to the bin loss."""
    target = F.adaptive_avg_pool2d(true_ab, mean_ab.shape[-2:])
    overshoot = torch.linalg.vector_norm(mean_ab.float(), dim=1) - torch.linalg.vector_norm(target, dim=1)
    return F.relu(overshoot - margin).mean() / AB_SCALE
