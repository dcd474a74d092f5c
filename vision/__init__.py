"""Vision: encoders (NatureCNN, IMPALA ResNet, ResNet-18, ViT, DCGAN discriminator), encoder files, augmentation,
frame datasets (``data``), pretraining (``pretrain``: supervised, gan, mae) and linear probes (``probe``)."""

from rlkit.vision.encoders import MLP, Encoder, NatureCNN, SmallNatureCNN, default_encoder, make_encoder
from rlkit.vision.gan import DCGANDiscriminator
from rlkit.vision.vit import ViT

__all__ = [
    "DCGANDiscriminator", "MLP", "Encoder", "NatureCNN", "SmallNatureCNN", "ViT", "default_encoder", "make_encoder"
]
