"""Constants that data and models both need, kept apart so that neither imports the other.

CIFAR_MEAN / CIFAR_STD: the per-channel normalisation of the LSAS seed (bearpaw's
pytorch-classification, `run.py`), used for CIFAR-10/100 and STL-10; ImageNet's are timm's
(`timm.data.IMAGENET_DEFAULT_MEAN`).
"""
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
