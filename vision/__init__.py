"""Vision: encoders (and, later, frame datasets, pretraining and probes)."""

from rlkit.vision.encoders import MLP, Encoder, NatureCNN, SmallNatureCNN, default_encoder, make_encoder

__all__ = ["MLP", "Encoder", "NatureCNN", "SmallNatureCNN", "default_encoder", "make_encoder"]
