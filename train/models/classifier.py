"""ResNet-18 on the L channel: torchvision's model with a one-channel stem."""

import torch
import torchvision

ENCODER_STRIDE = 32  # ResNet-18 downsamples 32x: the deepest feature map is 1/32 of the input


def resnet18_gray(num_classes: int = 102) -> torchvision.models.ResNet:
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


class ResNetStages(torch.nn.Module):
    """The classifier without avgpool and fc, returning the feature map of every stage
    (strides 2, 4, 8, 16, 32) for decoders with skip connections."""

    channels = (64, 64, 128, 256, 512)

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x):
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)
        return s2, s4, s8, s16, s32


def encoder_from_classifier(state_dict: dict | None) -> ResNetStages:
    """A ResNet-18 encoder, initialised from a classifier state dict (fc dropped) or from scratch."""
    resnet = resnet18_gray()
    if state_dict is not None:
        state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = resnet.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ValueError(f"classifier weights do not fit ResNet-18: missing {missing}, unexpected {unexpected}")
    return ResNetStages(resnet)
