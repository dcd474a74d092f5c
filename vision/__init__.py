"""Vision: encoders, frame datasets (``data``), pretraining (``pretrain``: supervised, gan, mae) and probes."""

from rlkit.vision.encoders import MLP, Encoder, NatureCNN, SmallNatureCNN, default_encoder, make_encoder
from rlkit.vision.gan import DCGANDiscriminator

__all__ = ["DCGANDiscriminator", "MLP", "Encoder", "NatureCNN", "SmallNatureCNN", "default_encoder", "make_encoder"]
