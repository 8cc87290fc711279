"""The shared quantizer backend: every family quantizes through these classes.

Layout is channels-last: latents (..., dim); ids int64 (...) for one codebook and (..., n_q) (codebook
axis last) for residual, group and grouped-binary quantizers. `encode`/`decode` are the exportable
inference path; `forward` adds losses, usage statistics and training updates.
"""

from zoo.layers.quantize.base import (
    Quantizer,
    QuantizerOutput,
    check_ids,
    check_latents,
    checks_enabled,
)
from zoo.layers.quantize.binary import BSQ, LFQ, GroupedBinary, bits_to_ids, factorized_entropy, ids_to_bits
from zoo.layers.quantize.dual import DualCodebookVQ
from zoo.layers.quantize.fsq import FSQ
from zoo.layers.quantize.multiscale import MultiScaleResidualVQ, Phi, phi_index
from zoo.layers.quantize.projected import ProjectedVQ, ResidualLFQ
from zoo.layers.quantize.residual import GroupVQ, ResidualVQ
from zoo.layers.quantize.search import nearest_code
from zoo.layers.quantize.training import kmeans, rotation_trick
from zoo.layers.quantize.usage import CodebookUsage
from zoo.layers.quantize.vq import VectorQuantizer

__all__ = [
    "BSQ",
    "FSQ",
    "LFQ",
    "CodebookUsage",
    "DualCodebookVQ",
    "GroupVQ",
    "GroupedBinary",
    "MultiScaleResidualVQ",
    "Phi",
    "ProjectedVQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualLFQ",
    "ResidualVQ",
    "VectorQuantizer",
    "bits_to_ids",
    "check_ids",
    "check_latents",
    "checks_enabled",
    "factorized_entropy",
    "ids_to_bits",
    "kmeans",
    "nearest_code",
    "phi_index",
    "rotation_trick",
]
