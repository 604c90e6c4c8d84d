"""Model layer: encoder registry, pretrained-weight resolution and U-Net building."""
